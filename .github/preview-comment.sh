#!/bin/sh
# Posts the output of a failed `pulumi preview` on the pull request, as the one
# comment per stack that pulumi/actions keeps for successful previews.
#
#   sh .github/preview-comment.sh STACK OUTPUT_FILE
#
# Needs GH_TOKEN, GITHUB_REPOSITORY and PR_NUMBER; run from the checkout (it
# reads the project name from Pulumi.yaml).
#
# pulumi/actions only comments when the command succeeds; it edits an earlier
# comment that starts with its heading and holds its "Pulumi report" summary
# (src/libs/pr.ts). This comment has both, so either one edits the other's.
set -eu
stack=$1
output=$2
: "${GH_TOKEN:?}" "${GITHUB_REPOSITORY:?}" "${PR_NUMBER:?}"

project=$(sed -n 's/^name:[[:space:]]*//p' Pulumi.yaml | head -n 1)
heading="#### :tropical_drink: \`preview\` on $project/$stack"
summary="<summary>Pulumi report</summary>"
body=$(mktemp)
report=$(mktemp)
trap 'rm -f "$body" "$report"' EXIT

sed -e 's/&/\&amp;/g' -e 's/</\&lt;/g' -e 's/>/\&gt;/g' "$output" >"$report"
{
    printf '%s\n\n' "$heading"
    printf '**The preview failed**, and so does this check: the reason is at the end of the report.\n\n'
    printf '<details open>\n%s\n\n<pre>\n' "$summary"
    # A comment holds up to 65536 characters: keep the end, where the policy
    # violations and the error are, from the first whole line.
    if [ "$(wc -c <"$report")" -gt 60000 ]; then
        echo "(the first part of the report is left out: see the job log)"
        tail -c 60000 "$report" | sed 1d
    else
        cat "$report"
    fi
    printf '</pre>\n</details>\n'
} >"$body"

existing=$(HEADING=$heading SUMMARY=$summary gh api --paginate "repos/$GITHUB_REPOSITORY/issues/$PR_NUMBER/comments" \
    --jq '.[] | select((.body | startswith(env.HEADING)) and (.body | contains(env.SUMMARY))) | .id' | head -n 1)
if [ -n "$existing" ]; then
    gh api --method PATCH "repos/$GITHUB_REPOSITORY/issues/comments/$existing" -F "body=@$body" >/dev/null
    echo "preview-comment: updated comment $existing on pull request $PR_NUMBER"
else
    gh api --method POST "repos/$GITHUB_REPOSITORY/issues/$PR_NUMBER/comments" -F "body=@$body" >/dev/null
    echo "preview-comment: commented on pull request $PR_NUMBER"
fi

"""python -m components.report STACK_OUTPUT.json [--html out.html] [--markdown out.md]

STACK_OUTPUT.json is what `pulumi stack output --json` prints ('-' reads stdin).
Without --html or --markdown the Markdown goes to stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from components.report.figures import ReportError, load_reports
from components.report.render import html_page, markdown


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m components.report", description=__doc__.splitlines()[0])
    parser.add_argument("stack_output", help="`pulumi stack output --json` saved to a file, or - for stdin")
    parser.add_argument("--html", type=Path, help="write the HTML page here")
    parser.add_argument("--markdown", type=Path, help="write the Markdown here")
    args = parser.parse_args(argv)
    try:
        text = sys.stdin.read() if args.stack_output == "-" else Path(args.stack_output).read_text()
        reports = load_reports(json.loads(text))
    except (OSError, json.JSONDecodeError, ReportError) as err:
        print(f"report: {err}", file=sys.stderr)
        return 2
    if args.html:
        args.html.write_text(html_page(reports))
    if args.markdown:
        args.markdown.write_text(markdown(reports))
    if not args.html and not args.markdown:
        sys.stdout.write(markdown(reports))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The overhead report: `python -m components.report <stack-output.json> --html out.html --markdown out.md`."""

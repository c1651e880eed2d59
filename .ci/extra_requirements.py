"""Print the requirements of one of fastmlp's extras, read from the installed package's metadata.

A CI step installs its backend's extra with ``pip install $(python .ci/extra_requirements.py
numba)`` rather than ``pip install -e ".[numba]"``: the latter re-runs the editable build, which
compiles the three cpp modules again (about two minutes each time) for nothing.
"""

import importlib.metadata
import re
import sys

extra = sys.argv[1]
marker = re.compile(r'extra\s*==\s*"' + re.escape(extra) + '"')
reqs = [r.split(";")[0].strip() for r in importlib.metadata.requires("fastmlp") or [] if marker.search(r)]
if not reqs:
    sys.exit(f"fastmlp (installed) has no extra {extra!r}")
print("\n".join(reqs))

"""dogbooth orchestration: profiles, the generated Serve config, and bring-up for each platform.

Kept import-light: the noxfile imports `dogbooth.bootstrap` with nothing but the standard library.
"""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

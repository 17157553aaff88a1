"""pytest configuration shared by tests/, the doctests of the packages and README.md.

Hypothesis runs with the "ci" profile when the environment variable CI is set (as CI does):
derandomized, so a statistical property test cannot fail on one unlucky draw in CI and pass on
the next run; locally the default profile keeps exploring new examples.
"""

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("dev", deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

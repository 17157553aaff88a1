"""pytest configuration shared by tests/, the doctests of the packages and README.md.

Hypothesis runs with the "suite" profile wherever the suite runs (scripts/run-tests, .ci/run, a bare
pytest): derandomized, so the examples are a function of the test and a statistical property test
passes or fails the same way on every run and every machine. A developer hunting for failures
opts into fresh random examples with ``SFO_HYPOTHESIS_PROFILE=dev``.
"""

import os

from hypothesis import settings

PROFILES = {"suite": dict(derandomize=True, deadline=None, print_blob=True),
            "dev": dict(deadline=None, print_blob=True)}
for _name, _options in PROFILES.items():
    settings.register_profile(_name, **_options)
_profile = os.environ.get("SFO_HYPOTHESIS_PROFILE", "suite")
if _profile not in PROFILES:
    raise ValueError(f"The 'SFO_HYPOTHESIS_PROFILE' environment variable must be one of {', '.join(PROFILES)}. "
                     f"Got SFO_HYPOTHESIS_PROFILE={_profile!r} instead.")
settings.load_profile(_profile)

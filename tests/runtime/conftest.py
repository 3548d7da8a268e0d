"""One compute thread per test, as in tests/deploy (the runtime is tuned for one thread)."""

from tests.deploy.conftest import _one_thread  # noqa: F401  (autouse fixture shared with the deploy tests)

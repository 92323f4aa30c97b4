from tests.emulators.fixtures import emulators

__all__ = ["emulators"]

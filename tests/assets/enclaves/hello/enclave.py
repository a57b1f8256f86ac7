"""The sample enclave: its bytes are measured, so any change here changes MRENCLAVE."""

from pkg.util import greeting


def hello(name: str) -> str:
    return greeting(name)

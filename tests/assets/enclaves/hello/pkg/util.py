"""Helper module of the sample enclave."""


def greeting(name: str) -> str:
    return f"hello, {name}"

"""enklave.toml, signed bundles and what loading them checks (the EINIT checks), and signing keys."""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import os
import shutil
import stat
from pathlib import Path

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import ASSETS
from enklave.errors import ConfigError, InvalidBundle, LaunchError, TransportError, UsageError
from enklave.runtime import (
    Bundle,
    EnclaveConfig,
    collect_files,
    load_bundle,
    load_signing_key,
    measure,
    read_bundle,
    save_signing_key,
    sign_bundle,
    write_bundle,
)
from enklave.runtime.signing import default_signing_key_path, load_or_create_signing_key
from enklave.sgx.report import AttributeFlags, Attributes
from enklave.sgx.sigstruct import Sigstruct

HELLO = ASSETS / "enclaves" / "hello"
DATE = datetime.date(2025, 1, 2)


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return load_signing_key(ASSETS / "enclaves" / "test-signing-key-a.pem")


@pytest.fixture(scope="module")
def other_key() -> rsa.RSAPrivateKey:
    return load_signing_key(ASSETS / "enclaves" / "test-signing-key-b.pem")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    target = tmp_path / "hello"
    shutil.copytree(HELLO, target)
    return target


@pytest.fixture(scope="module")
def bundle(key: rsa.RSAPrivateKey) -> Bundle:
    return sign_bundle(HELLO / "enklave.toml", key, date=DATE)


def _with(bundle: Bundle, **changes: object) -> bytes:
    """The bundle's bytes with some payload entries replaced (the SIGSTRUCT stays as signed)."""
    payload = {
        "config": bundle.config_text,
        "files": dict(bundle.files),
        "sigstruct": bundle.sigstruct.to_bytes(),
    }
    payload.update(changes)
    return bundle.to_bytes()[:10] + cbor2.dumps(payload, canonical=True)


# --- enklave.toml -------------------------------------------------------------------------------------------


def test_config_defaults() -> None:
    config = EnclaveConfig.from_toml('[enclave]\nname = "app"\n', None)
    assert config == EnclaveConfig(name="app")
    assert (config.entry, config.files, config.heap_size, config.threads) == (
        "enclave",
        ("enclave.py",),
        64 << 20,
        4,
    )
    assert (config.max_message_size, config.env, config.debug, config.product_id) == (16 << 20, (), False, 0)


def test_config_sample_parses() -> None:
    config = EnclaveConfig.load(HELLO / "enklave.toml")
    assert config.name == "hello"
    assert config.files == ("enclave.py", "pkg/*.py")
    assert (config.product_id, config.security_version, config.heap_size, config.threads) == (
        7,
        3,
        1 << 20,
        2,
    )
    assert config.env == ("HELLO_GREETING",)
    assert config.gramine == {"sys.stack.size": "2M"}
    assert config.base_dir == HELLO


@pytest.mark.parametrize(
    ("text", "expected"), [("512K", 512 << 10), ("1G", 1 << 30), ("8192", 8192), ("2MiB", 2 << 20)]
)
def test_heap_size_units(text: str, expected: int) -> None:
    config = EnclaveConfig.from_toml(f'[enclave]\nname = "a"\nheap_size = "{text}"\n', None)
    assert config.heap_size == expected


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ("", "enclave.name"),
        ('name = "Bad Name"', "enclave.name"),
        ('name = "a"\nentry = "1bad"', "enclave.entry"),
        ('name = "a"\nfiles = []', "enclave.files"),
        ('name = "a"\nfiles = ["../x.py"]', "enclave.files"),
        ('name = "a"\nfiles = ["/etc/passwd"]', "enclave.files"),
        ('name = "a"\nfiles = ["a\\\\b.py"]', "enclave.files"),
        ('name = "a"\nfiles = "enclave.py"', "enclave.files"),
        ('name = "a"\nproduct_id = 65536', "enclave.product_id"),
        ('name = "a"\nproduct_id = true', "enclave.product_id"),
        ('name = "a"\nsecurity_version = -1', "enclave.security_version"),
        ('name = "a"\ndebug = "yes"', "enclave.debug"),
        ('name = "a"\nheap_size = "12345"', "enclave.heap_size"),
        ('name = "a"\nheap_size = "lots"', "enclave.heap_size"),
        ('name = "a"\nheap_size = 0', "enclave.heap_size"),
        ('name = "a"\nthreads = 0', "enclave.threads"),
        ('name = "a"\nthreads = 257', "enclave.threads"),
        ('name = "a"\nmax_message_size = "1K"', "enclave.max_message_size"),
        ('name = "a"\nenv = ["NOT-A-NAME"]', "enclave.env"),
        ('name = "a"\nenv = ["A", "A"]', "enclave.env"),
        ('name = "a"\nthreds = 3', "enclave.threds"),
    ],
)
def test_config_errors_name_the_key(body: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as info:
        EnclaveConfig.from_toml(f"[enclave]\n{body}\n", None)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("name = 1", "not valid TOML|name"),
        ('[enclave]\nname = "a"\n[host]\nx = 1', "host"),
        ('[other]\nname = "a"', "other"),
        ('[enclave]\nname = "a"\n[gramine]\nsgx.debug = true', "gramine.sgx"),
        ('[enclave]\nname = "a"\n[gramine]\n"x" = 1.5', "gramine.x"),
    ],
)
def test_config_document_errors(text: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        EnclaveConfig.from_toml(text, None)


def test_config_load_errors(tmp_path: Path) -> None:
    with pytest.raises(TransportError):
        EnclaveConfig.load(tmp_path / "missing.toml")
    (tmp_path / "bin.toml").write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="UTF-8"):
        EnclaveConfig.load(tmp_path / "bin.toml")


def test_canonical_bytes_ignore_formatting_but_not_values() -> None:
    a = EnclaveConfig.from_toml('[enclave]\nname = "a"\nthreads = 2\nheap_size = "1M"\n', None)
    b = EnclaveConfig.from_toml(
        '# comment\n[enclave]\nheap_size = 1048576\nthreads   = 2\nname = "a"\n', None
    )
    assert a.canonical_bytes() == b.canonical_bytes()
    assert a.canonical_bytes() != dataclasses.replace(a, threads=3).canonical_bytes()


# --- measurement --------------------------------------------------------------------------------------------

FILES = {"enclave.py": b"def f():\n    return 1\n", "pkg/util.py": b"X = 2\n" * 1000, "pkg/__init__.py": b""}
BASE = EnclaveConfig(name="m", heap_size=1 << 20, threads=2)


def test_measurement_is_deterministic_and_order_independent() -> None:
    first = measure(BASE, FILES)
    assert measure(BASE, dict(reversed(list(FILES.items())))) == first
    assert measure(dataclasses.replace(BASE, base_dir=Path("/elsewhere"), files=("*.py",)), FILES) == first
    assert len(first) == 32


@pytest.mark.parametrize(
    "change",
    [
        {"name": "n"},
        {"entry": "other"},
        {"product_id": 1},
        {"security_version": 1},
        {"debug": True},
        {"heap_size": (1 << 20) + 4096},
        {"threads": 3},
        {"max_message_size": 1 << 21},
        {"env": ("HOME",)},
        {"gramine": {"sys.stack.size": "1M"}},
    ],
)
def test_every_config_field_changes_the_measurement(change: dict[str, object]) -> None:
    assert measure(dataclasses.replace(BASE, **change), FILES) != measure(BASE, FILES)  # type: ignore[arg-type]


@pytest.mark.parametrize("position", [0, 5, 21])
def test_any_code_byte_changes_the_measurement(position: int) -> None:
    code = bytearray(FILES["enclave.py"])
    code[position] ^= 0x20
    assert measure(BASE, {**FILES, "enclave.py": bytes(code)}) != measure(BASE, FILES)


def test_adding_renaming_or_padding_files_changes_the_measurement() -> None:
    reference = measure(BASE, FILES)
    assert measure(BASE, {**FILES, "extra.py": b""}) != reference
    renamed = {("pkg/other.py" if k == "pkg/util.py" else k): v for k, v in FILES.items()}
    assert measure(BASE, renamed) != reference
    # Trailing zeros would vanish into page padding if sizes were not in the measured file table.
    assert measure(BASE, {**FILES, "enclave.py": FILES["enclave.py"] + b"\0"}) != reference


# --- sign, write, read, load --------------------------------------------------------------------------------


def test_sign_write_load_round_trip(bundle: Bundle, key: rsa.RSAPrivateKey, tmp_path: Path) -> None:
    assert sorted(bundle.files) == ["enclave.py", "pkg/__init__.py", "pkg/util.py"]
    assert bundle.mr_enclave == measure(bundle.config, bundle.files)
    assert (
        bundle.mr_signer
        == hashlib.sha256(key.public_key().public_numbers().n.to_bytes(384, "little")).digest()
    )
    path = tmp_path / "out" / "hello.enclave"
    write_bundle(bundle, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert path.read_bytes()[:10] == b"ENKLAVE\0\x01\x00"
    loaded = load_bundle(path)
    assert loaded == bundle
    assert loaded.to_bytes() == bundle.to_bytes()
    assert read_bundle(bundle.to_bytes()) == bundle
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_signing_is_independent_of_date_and_key_for_mrenclave(
    bundle: Bundle, other_key: rsa.RSAPrivateKey
) -> None:
    again = sign_bundle(HELLO / "enklave.toml", other_key, date=datetime.date(2030, 1, 1))
    assert again.mr_enclave == bundle.mr_enclave
    assert again.mr_signer != bundle.mr_signer


def test_report_body_is_the_einit_identity(bundle: Bundle) -> None:
    body = bundle.report_body(cpu_svn=b"\x02" * 16)
    assert body.mr_enclave == bundle.mr_enclave
    assert body.mr_signer == bundle.mr_signer
    assert (body.isv_prod_id, body.isv_svn) == (7, 3)
    assert body.attributes == Attributes(AttributeFlags.INIT | AttributeFlags.MODE64BIT, 3)
    assert body.cpu_svn == b"\x02" * 16
    assert not body.debug


def test_debug_config_signs_a_debug_enclave(project: Path, key: rsa.RSAPrivateKey) -> None:
    toml = project / "enklave.toml"
    toml.write_text(toml.read_text().replace("debug = false", "debug = true"))
    signed = sign_bundle(toml, key, date=DATE)
    assert signed.sigstruct.debug
    assert signed.report_body().debug


def test_flipped_code_byte_does_not_load(bundle: Bundle, tmp_path: Path) -> None:
    code = bytearray(bundle.files["pkg/util.py"])
    code[10] ^= 0x01
    path = tmp_path / "tampered.enclave"
    path.write_bytes(_with(bundle, files={**bundle.files, "pkg/util.py": bytes(code)}))
    read_bundle(path)  # well-formed: parsing alone does not notice
    with pytest.raises(LaunchError, match="changed after signing"):
        load_bundle(path)


def test_changed_config_does_not_load(bundle: Bundle) -> None:
    text = bundle.config_text.replace('heap_size = "1M"', 'heap_size = "2M"')
    assert text != bundle.config_text
    with pytest.raises(LaunchError, match="changed after signing"):
        read_bundle(_with(bundle, config=text)).verify()


def test_reformatted_config_still_loads(bundle: Bundle) -> None:
    read_bundle(_with(bundle, config="# only a comment added\n" + bundle.config_text)).verify()


def test_wrong_signature_does_not_load(bundle: Bundle) -> None:
    raw = bytearray(bundle.sigstruct.to_bytes())
    raw[600] ^= 0xFF
    with pytest.raises(LaunchError, match="signature"):
        read_bundle(_with(bundle, sigstruct=bytes(raw))).verify()


def test_sigstruct_for_other_code_does_not_load(bundle: Bundle, other_key: rsa.RSAPrivateKey) -> None:
    forged = Sigstruct.sign(
        other_key,
        enclave_hash=bytes(32),
        isv_prod_id=7,
        isv_svn=3,
        attributes=bundle.sigstruct.attributes,
        date=DATE,
    )
    with pytest.raises(LaunchError, match="changed after signing"):
        read_bundle(_with(bundle, sigstruct=forged.to_bytes())).verify()


@pytest.mark.parametrize(
    ("overrides", "what"),
    [({"isv_prod_id": 8}, "product id"), ({"isv_svn": 4}, "security version"), ({"debug": True}, "debug")],
)
def test_identity_fields_must_match_the_config(
    bundle: Bundle, key: rsa.RSAPrivateKey, overrides: dict[str, object], what: str
) -> None:
    flags = AttributeFlags.MODE64BIT | (AttributeFlags.DEBUG if overrides.pop("debug", False) else 0)
    args: dict[str, object] = {"isv_prod_id": 7, "isv_svn": 3, **overrides}
    resigned = Sigstruct.sign(
        key,
        enclave_hash=bundle.mr_enclave,
        attributes=Attributes(int(flags), 3),
        date=DATE,
        **args,  # type: ignore[arg-type]
    )
    with pytest.raises(LaunchError, match=what):
        read_bundle(_with(bundle, sigstruct=resigned.to_bytes())).verify()


def _signed_with_entry(key: rsa.RSAPrivateKey, name: str, entry: str, files: dict[str, bytes]) -> Bundle:
    """A bundle of ``files`` whose configuration names ``entry``, signed by ``key`` over its own measurement."""
    config_text = f'[enclave]\nname = "{name}"\nentry = "{entry}"\nproduct_id = 7\nsecurity_version = 3\n'
    config = EnclaveConfig.from_toml(config_text, None)
    sigstruct = Sigstruct.sign(
        key,
        enclave_hash=measure(config, files),
        isv_prod_id=7,
        isv_svn=3,
        attributes=Attributes(int(AttributeFlags.MODE64BIT), 3),
        date=DATE,
    )
    return Bundle(config=config, config_text=config_text, files=files, sigstruct=sigstruct)


@pytest.mark.parametrize(
    ("entry", "files"),
    [
        ("main", {"enclave.py": b"X = 1\n"}),
        ("pkg", {"pkg/util.py": b"X = 1\n"}),
        ("pkg.util", {"pkg.py": b"", "pkg/util.py": b"X = 1\n"}),
        ("bad.mod", {"bad-dir/mod.py": b"X = 1\n"}),
    ],
)
def test_signed_bundle_without_its_entry_does_not_load(
    key: rsa.RSAPrivateKey, entry: str, files: dict[str, bytes]
) -> None:
    # Signed by its own key over its own measurement: only the missing entry module is wrong. Starting it
    # would import that name from the host's sys.path, outside the measurement.
    signed = _signed_with_entry(key, "noentry", entry, files)
    with pytest.raises(LaunchError, match="entry module"):
        read_bundle(signed.to_bytes()).verify()


@pytest.mark.parametrize(
    ("entry", "files"),
    [
        ("pkg.mod", {"pkg/mod.py": b"X = 1\n"}),
        ("pkg", {"pkg/__init__.py": b"", "pkg.py": b""}),
        ("a.b.c", {"a/b/c.py": b"X = 1\n", "a/__init__.py": b""}),
    ],
)
def test_signed_bundle_with_its_entry_loads(
    key: rsa.RSAPrivateKey, entry: str, files: dict[str, bytes]
) -> None:
    _signed_with_entry(key, "entry", entry, files).verify()


def test_exponent_other_than_3_does_not_load(bundle: Bundle) -> None:
    raw = bytearray(bundle.sigstruct.to_bytes())
    raw[512] = 5
    with pytest.raises(LaunchError, match="exponent"):
        read_bundle(_with(bundle, sigstruct=bytes(raw))).verify()


# --- malformed bundles --------------------------------------------------------------------------------------


@pytest.mark.parametrize("cut", [0, 5, 9, 10, 11, 100, -1])
def test_truncated_bundles_are_invalid(bundle: Bundle, cut: int) -> None:
    with pytest.raises(InvalidBundle):
        read_bundle(bundle.to_bytes()[:cut])


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda raw: b"ENKLAVX\0" + raw[8:], "magic"),
        (lambda raw: raw[:8] + b"\x02\x00" + raw[10:], "version"),
        (lambda raw: raw + b"\0", "trailing bytes"),
        # Shared references (tags 28/29), which a general decoder expands: no tags are read at all.
        (lambda raw: raw[:10] + cbor2.dumps([[b"x" * 64]] * 4, value_sharing=True), "tags are not accepted"),
        (lambda raw: raw[:10] + cbor2.dumps([1, 2]), "keys"),
        (lambda raw: raw[:10] + b"\xff\xff", "CBOR"),
        (
            lambda raw: raw[:10] + cbor2.dumps({"config": 1, "files": {}, "sigstruct": b""}, canonical=True),
            "types",
        ),
    ],
)
def test_malformed_bundles_are_invalid(bundle: Bundle, mutate: object, message: str) -> None:
    with pytest.raises(InvalidBundle, match=message):
        read_bundle(mutate(bundle.to_bytes()))  # type: ignore[operator]


@pytest.mark.parametrize("path", ["../evil.py", "/etc/passwd", "a//b.py", "./a.py", "a\\b.py", ""])
def test_bad_paths_in_bundles_are_invalid(bundle: Bundle, path: str) -> None:
    with pytest.raises(InvalidBundle):
        read_bundle(_with(bundle, files={**bundle.files, path: b"x"}))


def test_bundle_limits(bundle: Bundle) -> None:
    raw = bundle.to_bytes()
    with pytest.raises(InvalidBundle, match="larger than"):
        read_bundle(raw, max_size=len(raw) - 1)
    many = {f"f{index}.py": b"" for index in range(10_001)}
    with pytest.raises(InvalidBundle, match="10000 files"):
        read_bundle(_with(bundle, files=many))
    with pytest.raises(InvalidBundle, match="SIGSTRUCT"):
        read_bundle(_with(bundle, sigstruct=b"\0" * 1808))
    with pytest.raises(InvalidBundle, match="configuration"):
        read_bundle(_with(bundle, config="[enclave]\n"))


def test_unreadable_bundle_is_a_transport_error(tmp_path: Path) -> None:
    with pytest.raises(TransportError):
        load_bundle(tmp_path / "missing.enclave")


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=300))
def test_fuzzed_bundles_only_raise_invalid_bundle(payload: bytes) -> None:
    with pytest.raises(InvalidBundle):
        read_bundle(b"ENKLAVE\0\x01\x00" + payload)


# --- collecting files ---------------------------------------------------------------------------------------


def test_collect_files_reads_matches(project: Path) -> None:
    files = collect_files(EnclaveConfig.load(project / "enklave.toml"))
    assert files["pkg/util.py"] == (project / "pkg" / "util.py").read_bytes()
    assert sorted(files) == ["enclave.py", "pkg/__init__.py", "pkg/util.py"]


def test_pattern_without_match_is_a_config_error(project: Path) -> None:
    toml = project / "enklave.toml"
    toml.write_text(toml.read_text().replace('"pkg/*.py"', '"lib/*.py"'))
    with pytest.raises(ConfigError, match=r"enclave\.files: 'lib/\*\.py' matches no file"):
        collect_files(EnclaveConfig.load(toml))


def test_missing_entry_module_is_a_config_error(project: Path) -> None:
    toml = project / "enklave.toml"
    toml.write_text(toml.read_text().replace('entry = "enclave"', 'entry = "main"'))
    with pytest.raises(ConfigError, match=r"enclave\.entry"):
        sign_bundle(toml, load_signing_key(ASSETS / "enclaves" / "test-signing-key-a.pem"))


def test_symlink_leaving_the_directory_is_refused(project: Path, tmp_path: Path) -> None:
    outside = tmp_path / "secret.py"
    outside.write_text("SECRET = 1\n")
    os.symlink(outside, project / "pkg" / "leak.py")
    with pytest.raises(ConfigError, match="symlink"):
        collect_files(EnclaveConfig.load(project / "enklave.toml"))


def test_config_without_directory_cannot_collect() -> None:
    with pytest.raises(ConfigError, match=r"enclave\.files"):
        collect_files(EnclaveConfig(name="x"))


# --- signing keys -------------------------------------------------------------------------------------------


def test_save_and_load_signing_key(key: rsa.RSAPrivateKey, tmp_path: Path) -> None:
    path = tmp_path / "keys" / "k.pem"
    save_signing_key(key, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert load_signing_key(path).private_numbers() == key.private_numbers()


def test_wrong_keys_are_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "k.pem"
    save_signing_key(rsa.generate_private_key(65537, 3072), path)
    with pytest.raises(UsageError, match="exponent 65537"):
        load_signing_key(path)
    path.write_text("-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n")
    with pytest.raises(UsageError, match="not an unencrypted PEM") as info:
        load_signing_key(path)
    assert "\n" not in str(info.value)
    with pytest.raises(TransportError):
        load_signing_key(tmp_path / "missing.pem")


def test_default_key_is_created_once_under_enklave_home(tmp_path: Path) -> None:
    path = default_signing_key_path("hello", {"ENKLAVE_HOME": str(tmp_path)})
    assert path == tmp_path / "signing-keys" / "hello.pem"
    first, created = load_or_create_signing_key(path)
    again, created_again = load_or_create_signing_key(path)
    assert (created, created_again) == (True, False)
    assert first.private_numbers() == again.private_numbers()


def test_runtime_exports_are_public_and_documented() -> None:
    import enklave.runtime

    assert len(set(enklave.runtime.__all__)) == len(enklave.runtime.__all__)
    for name in enklave.runtime.__all__:
        value = getattr(enklave.runtime, name)
        if callable(value):
            assert (value.__doc__ or "").strip(), name


def test_bundle_files_are_read_only(bundle: Bundle) -> None:
    with pytest.raises(TypeError):
        bundle.files["enclave.py"] = b"evil"  # type: ignore[index]

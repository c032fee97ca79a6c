"""TLS on both ports with a test CA made here (cryptography)."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

import grpc
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from tensorflow_serving.apis import prediction_service_pb2_grpc

from support import (
    OUTPUT_ALIAS,
    RPC_TIMEOUT_S,
    azure_metadata,
    azure_request,
    check_probs,
    curl,
    float_tensor_values,
    image_bytes,
)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, Path]:
    """ca.pem, server.pem (SAN 127.0.0.1, ::1, localhost), server.key (PKCS#8)."""
    d = tmp_path_factory.mktemp("tls")
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("accel interop test CA"))
        .issuer_name(_name("accel interop test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.IPAddress(ipaddress.ip_address("::1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = {"ca": d / "ca.pem", "cert": d / "server.pem", "key": d / "server.key"}
    paths["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return paths


@pytest.fixture(scope="module")
def tls_server(module_start_server, pki):
    return module_start_server("--model", "shuffle", "--tls-cert", str(pki["cert"]), "--tls-key", str(pki["key"]))


def test_grpc_with_ca_root(tls_server, pki):
    creds = grpc.ssl_channel_credentials(root_certificates=pki["ca"].read_bytes())
    with grpc.secure_channel(tls_server.grpc, creds) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        resp = stub.Predict(
            azure_request([image_bytes("coffee")]), timeout=RPC_TIMEOUT_S, metadata=azure_metadata("shuffle")
        )
    check_probs(float_tensor_values(resp.outputs[OUTPUT_ALIAS], "TLS output")[0], "coffee", "Predict over TLS")


def test_plaintext_grpc_is_refused(tls_server):
    with grpc.insecure_channel(tls_server.grpc) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            stub.Predict(azure_request([image_bytes("coffee")]), timeout=5, metadata=azure_metadata("shuffle"))
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE, (
        f"a plaintext channel to a TLS port must fail UNAVAILABLE, got {err.value.code()} {err.value.details()}"
    )
    assert tls_server.alive(), "the TLS server died on a plaintext connection"


def test_https_with_ca(tls_server, pki):
    r = requests.get(f"https://{tls_server.http}/v2/health/live", verify=str(pki["ca"]), timeout=10)
    assert r.status_code == 200, f"https /v2/health/live: {r.status_code}"
    c = curl(f"https://{tls_server.http}/v1/models/shuffle", cacert=pki["ca"])
    assert c.status == 200, f"curl --cacert https /v1/models/shuffle: {c.status}"


def test_plain_http_is_refused(tls_server, pki):
    try:
        r = requests.get(f"http://{tls_server.http}/v2/health/live", timeout=5)
    except requests.exceptions.RequestException:
        pass
    else:
        assert r.status_code != 200, "plain http:// to the TLS port answered 200"
    # ... and TLS still works afterwards.
    r = requests.get(f"https://{tls_server.http}/v2/health/live", verify=str(pki["ca"]), timeout=10)
    assert r.status_code == 200, f"https after a plaintext attempt: {r.status_code}"

"""Closed by default: the model-control API refused to every client in every mode; TLS and
mutual TLS on gRPC and HTTPS; the API key required everywhere but health."""

from __future__ import annotations

import datetime
import http.client
import ipaddress
import json
import ssl

import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from i2tt_server.serve_options import API_KEY_HEADER, GRPC_API_KEY_HEADER
from served import Served

KEY = "k3y-for-tests"
HEADER = {API_KEY_HEADER: KEY}  # HTTP
# gRPC: Triton expects restricted-protocol headers with this prefix in the call's metadata
GRPC_HEADER = {GRPC_API_KEY_HEADER: KEY}


def write_certificates(folder):
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate, all
    signed by the CA, plus a second CA that signed nothing here: paths by name."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    paths = {}

    def save(name, cert, key):
        paths[f"{name}.pem"] = folder / f"{name}.pem"
        paths[f"{name}.pem"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        paths[f"{name}.key"] = folder / f"{name}.key"
        paths[f"{name}.key"].write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))

    def certificate(name, issuer=None, issuer_key=None, ca=False, usage=None, sans=()):
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        builder = (x509.CertificateBuilder().subject_name(subject)
                   .issuer_name(issuer.subject if issuer else subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if usage:
            builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
        cert = builder.sign(issuer_key or key, hashes.SHA256())
        save(name, cert, key)
        return cert, key

    ca, ca_key = certificate("ca", ca=True)
    certificate("server", ca, ca_key, usage=ExtendedKeyUsageOID.SERVER_AUTH,
                sans=[x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    certificate("client", ca, ca_key, usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    certificate("stranger", usage=ExtendedKeyUsageOID.CLIENT_AUTH)  # self-signed, not by ca
    return paths


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    pytest.importorskip("cryptography", reason="the TLS tests make certificates with it")
    return write_certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def mtls(weights_dir, certs, tmp_path_factory):
    """Mutual TLS, the key from a file, and --models (explicit model loading)."""
    folder = tmp_path_factory.mktemp("mtls")
    (folder / "key").write_text(KEY + "\n")
    server = Served(weights_dir, folder / "serve.log", "--models", "t5_tags",
                    "--tls-cert", str(certs["server.pem"]), "--tls-key", str(certs["server.key"]),
                    "--tls-client-ca", str(certs["ca.pem"]), "--api-key-file", str(folder / "key"))
    try:
        yield server.wait_ready()
    finally:
        server.close()


def tls_client(server, certs, client: str | None = "client", **kwargs):
    extra = {"private_key": str(certs[f"{client}.key"]),
             "certificate_chain": str(certs[f"{client}.pem"])} if client else {}
    return grpcclient.InferenceServerClient(f"localhost:{server.grpc_port}", ssl=True,
                                            root_certificates=str(certs["ca.pem"]),
                                            **extra, **kwargs)


def tags_call(client, headers=None):
    from triton_calls import string_input

    return client.infer("t5_tags", [string_input("TEXT", ["a dog on a beach"])], headers=headers)


def https(server, certs, path, client: str | None = "client", headers=None, method="GET"):
    context = ssl.create_default_context(cafile=str(certs["ca.pem"]))
    if client:
        context.load_cert_chain(str(certs[f"{client}.pem"]), str(certs[f"{client}.key"]))
    connection = http.client.HTTPSConnection("localhost", server.http_port, context=context,
                                             timeout=10)
    try:
        connection.request(method, path, body=b"{}" if method == "POST" else None,
                           headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def refused(call) -> str:
    with pytest.raises(InferenceServerException) as caught:
        call()
    return str(caught.value)


def test_the_model_control_api_is_refused_without_models_option(triton, grpc_client, tmp_path):
    """The shared server (every model; no --models): no client may load or unload."""
    for call in (lambda: grpc_client.unload_model("t5_tags"),
                 lambda: grpc_client.load_model("t5_tags"),
                 lambda: grpc_client.get_model_repository_index(),
                 # loading a model from files the caller sends would run its model.py
                 lambda: grpc_client.load_model("evil", config=json.dumps({"backend": "python"}),
                                                files={"file:1/model.py": b"import os"}),
                 lambda: grpc_client.unload_model("t5_tags", headers={"i2tt-control": "guess"})):
        assert "restricted" in refused(call)
    import urllib.error
    import urllib.request
    for path in ("/v2/repository/models/t5_tags/unload", "/v2/repository/models/t5_tags/load",
                 "/v2/repository/index"):
        request = urllib.request.Request(triton.http_url + path, data=b"{}", method="POST")
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(request, timeout=10)
        assert caught.value.code == 403
    assert grpc_client.is_model_ready("t5_tags")


def test_mutual_tls_and_the_api_key(mtls, certs):
    # refused: plain text, TLS without a client certificate, a certificate of another CA
    for client in (grpcclient.InferenceServerClient(mtls.grpc_url),
                   tls_client(mtls, certs, client=None), tls_client(mtls, certs, "stranger")):
        with client:
            assert refused(lambda: tags_call(client, GRPC_HEADER))
    with tls_client(mtls, certs) as client:
        # the right certificate: health without the key, everything else with it only
        assert client.is_server_ready()
        for headers in (None, {GRPC_API_KEY_HEADER: "wrong"}, HEADER):
            assert "restricted" in refused(lambda: tags_call(client, headers))
            assert "restricted" in refused(lambda: client.get_model_metadata("t5_tags", headers=headers))
            assert "restricted" in refused(lambda: client.get_inference_statistics(headers=headers))
        assert tags_call(client, GRPC_HEADER).as_numpy("TAGS").size
        # --models: the control API stays closed, the key does not open it
        assert "restricted" in refused(lambda: client.unload_model("t5_tags", headers=GRPC_HEADER))
        assert "restricted" in refused(lambda: client.load_model("t5_tags", headers=GRPC_HEADER))
    # HTTPS: same rules; health open to probes (with a client certificate under mTLS)
    assert https(mtls, certs, "/v2/health/ready")[0] == 200
    assert https(mtls, certs, "/v2/models/t5_tags/stats")[0] == 403
    assert https(mtls, certs, "/v2/models/t5_tags/stats", headers=HEADER)[0] == 200
    assert https(mtls, certs, "/v2/repository/models/t5_tags/unload", headers=HEADER,
                 method="POST")[0] == 403
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        https(mtls, certs, "/v2/health/ready", client=None)
    with pytest.raises((http.client.HTTPException, ConnectionError, OSError)):
        _plain_status(mtls)  # plain HTTP on the HTTPS port


def _plain_status(server) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=10)
    connection.request("GET", "/v2/health/ready")
    return connection.getresponse().status


def test_tls_with_the_api_key_from_the_environment(weights_dir, certs, tmp_path):
    server = Served(weights_dir, tmp_path / "serve.log", "--models", "t5_tags",
                    "--tls-cert", str(certs["server.pem"]), "--tls-key", str(certs["server.key"]),
                    env={"I2TT_API_KEY": KEY})
    try:
        server.wait_ready()
        assert "API key: required" in server.text()
        with tls_client(server, certs, client=None) as client:  # no client certificate needed
            assert "restricted" in refused(lambda: tags_call(client))
            assert tags_call(client, GRPC_HEADER).as_numpy("TAGS").size
        with grpcclient.InferenceServerClient(server.grpc_url) as plain:
            assert refused(lambda: tags_call(plain, GRPC_HEADER))
        assert https(server, certs, "/v2/health/ready", client=None)[0] == 200
        assert https(server, certs, "/v2/models/t5_tags/stats", client=None, headers=HEADER)[0] == 200
        with pytest.raises((http.client.HTTPException, ConnectionError, OSError)):
            _plain_status(server)
    finally:
        server.close()

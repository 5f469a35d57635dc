"""The client over a `dns:///` target with round_robin balancing, as services reach the
headless gRPC Service in Kubernetes (deploy/README.md)."""

from __future__ import annotations

from i2tt_client import I2TTClient

ROUND_ROBIN = [("grpc.lb_policy_name", "round_robin")]


def test_a_dns_target_with_round_robin_reaches_the_server(triton, seed_images):
    port = triton.grpc_url.rsplit(":", 1)[1]
    with I2TTClient(f"dns:///127.0.0.1:{port}", channel_args=ROUND_ROBIN, timeout=120) as client:
        assert client.is_ready()
        results = client.caption([seed_images["example1.jpg"], seed_images["human1.png"]])
        assert all(r.caption for r in results)

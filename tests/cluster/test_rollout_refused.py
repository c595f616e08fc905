"""On a real cluster, the operator refuses a rollout the CRD schema admits but that cannot
run as written (a Canary of 1 replica has no share between 0 and 100 %): Stalled with
reason InvalidSpec and a Warning Event saying so, no Deployment, no Service."""

from __future__ import annotations

import secrets

from _operator_support import (
    children,
    condition,
    create_batmodel,
    install_crd,
    running_operator,
    wait_settled,
)

from batcomputer_dev.kube_testing import kubectl_json


def test_a_rollout_that_cannot_run_is_refused_not_rolled_out_blue_green(kube_cluster, tmp_path):
    install_crd(kube_cluster)
    namespace = f"bc-rollout-refused-{secrets.token_hex(3)}"
    kube_cluster.kubectl("create", "namespace", namespace)
    try:
        with running_operator(kube_cluster, namespace, tmp_path / "operator.log"):
            create_batmodel(
                kube_cluster,
                namespace,
                "crime",
                {
                    "version": "1.0.0",
                    "source": {"uri": "http://10.244.0.1:10000/devstoreaccount1/m/crime/1.0.0"},
                    "replicas": 1,
                    "rollout": {"strategy": "Canary", "steps": [{"weight": 50}]},
                },
            )
            model = wait_settled(kube_cluster, "crime", namespace, "Stalled", "InvalidSpec")
            events = kubectl_json(
                kube_cluster,
                *("get", "events", "-n", namespace),
                "--field-selector=involvedObject.name=crime,reason=InvalidSpec",
            )["items"]
        stalled = condition(model, "Stalled")
        assert (
            "Canary splits traffic by pods and needs spec.replicas of at least 2"
            in (stalled["message"])
        )
        assert condition(model, "Ready")["status"] == "False"
        assert children(kube_cluster, "deployments", "crime", namespace) == []
        assert children(kube_cluster, "services", "crime", namespace) == []
        assert [event["type"] for event in events] == ["Warning"]
    finally:
        kube_cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)

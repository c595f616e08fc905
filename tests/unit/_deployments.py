"""A Deployment as the API server reports it, for the operator's pure routing and status rules."""


def deployment_object(
    *, replicas=2, generation=3, observed=3, ready=2, updated=2, total=2, available=2
):
    return {
        "metadata": {"name": "crime-v1-4-2", "generation": generation},
        "spec": {"replicas": replicas},
        "status": {
            "observedGeneration": observed,
            "replicas": total,
            "updatedReplicas": updated,
            "readyReplicas": ready,
            "availableReplicas": available,
        },
    }

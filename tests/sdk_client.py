"""The SageMaker SDK v2's own Predictor, pointed at a real `sagecraft serve` on 127.0.0.1: the
SDK's serializers and deserializers drive the requests, as they do against an endpoint."""

from __future__ import annotations

import boto3
import pytest
import sagemaker.local.local_session as local_session
from sagemaker.base_serializers import CSVSerializer
from sagemaker.local import LocalSagemakerRuntimeClient, LocalSession
from sagemaker.predictor import Predictor

from sagemaker_tree import Server


def sdk_predictor(
    server: Server, monkeypatch: pytest.MonkeyPatch, deserializer: object, serializer: object | None = None
) -> Predictor:
    """A Predictor whose requests go to `server` (CSVSerializer unless `serializer` is given)."""
    monkeypatch.setattr(local_session, "get_docker_host", lambda: "127.0.0.1")
    session = LocalSession(boto_session=boto3.Session(region_name="us-east-1"))
    session.sagemaker_runtime_client = LocalSagemakerRuntimeClient({"local": {"serving_port": server.port}})
    return Predictor(
        "sagecraft-local",
        sagemaker_session=session,
        serializer=serializer or CSVSerializer(),
        deserializer=deserializer,
    )

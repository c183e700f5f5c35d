"""The SageMaker Python SDK v2's real Predictor, serializers and runtime client against our server."""

from __future__ import annotations

import boto3
import numpy as np
import pandas as pd
import pytest
import sagemaker.local.local_session as local_session
from sagemaker.base_deserializers import (
    CSVDeserializer,
    JSONDeserializer,
    NumpyDeserializer,
    StringDeserializer,
)
from sagemaker.base_serializers import (
    CSVSerializer,
    JSONLinesSerializer,
    JSONSerializer,
    NumpySerializer,
)
from sagemaker.local import LocalSagemakerRuntimeClient, LocalSession
from sagemaker.predictor import Predictor

from sagemaker_tree import IRIS_FEATURES, Server

ROWS = [[5.0, 3.4, 1.5, 0.2], [6.6, 3.0, 5.6, 2.0]]


@pytest.fixture
def local_client(forest_server: Server, monkeypatch: pytest.MonkeyPatch) -> LocalSagemakerRuntimeClient:
    # Without Docker the SDK's "docker host" is this machine (contract, section 7).
    monkeypatch.setattr(local_session, "get_docker_host", lambda: "127.0.0.1")
    return LocalSagemakerRuntimeClient({"local": {"serving_port": forest_server.port}})


@pytest.fixture
def predictor(local_client: LocalSagemakerRuntimeClient) -> Predictor:
    session = LocalSession(boto_session=boto3.Session(region_name="us-east-1"))
    session.sagemaker_runtime_client = local_client
    return Predictor("sagecraft-local", sagemaker_session=session)


def test_csv_serializer_and_deserializer(predictor: Predictor) -> None:
    predictor.serializer = CSVSerializer()
    predictor.deserializer = CSVDeserializer()
    assert predictor.predict(ROWS) == [["setosa"], ["virginica"]]


def test_csv_serializer_with_a_dataframe(predictor: Predictor) -> None:
    predictor.serializer = CSVSerializer()
    predictor.deserializer = CSVDeserializer()
    frame = pd.DataFrame(ROWS, columns=IRIS_FEATURES)
    assert predictor.predict(frame) == [["setosa"], ["virginica"]]


def test_json_serializer_and_deserializer(predictor: Predictor) -> None:
    predictor.serializer = JSONSerializer()
    predictor.deserializer = JSONDeserializer()
    assert predictor.predict({"instances": ROWS}) == {"predictions": ["setosa", "virginica"]}


def test_jsonlines_serializer(predictor: Predictor) -> None:
    predictor.serializer = JSONLinesSerializer()
    predictor.deserializer = StringDeserializer(accept="application/jsonlines")
    body = [{"features": row} for row in ROWS]
    assert predictor.predict(body) == '"setosa"\n"virginica"\n'


def test_numpy_serializer_and_deserializer(predictor: Predictor) -> None:
    predictor.serializer = NumpySerializer()
    predictor.deserializer = NumpyDeserializer()
    answer = predictor.predict(np.array(ROWS))
    assert answer.tolist() == ["setosa", "virginica"]


def test_raw_headers_through_the_runtime_client(local_client: LocalSagemakerRuntimeClient) -> None:
    response = local_client.invoke_endpoint(
        Body="5.0,3.4,1.5,0.2",
        EndpointName="sagecraft-local",
        ContentType="text/csv",
        Accept="text/csv, application/json",
        CustomAttributes="trace=1",
    )
    raw = response["Body"]
    assert raw.status == 200
    assert raw.headers["Content-Type"] == "text/csv"
    assert raw.read() == b"setosa\n"


def test_runtime_client_sees_errors_as_status_and_short_json(
    local_client: LocalSagemakerRuntimeClient,
) -> None:
    response = local_client.invoke_endpoint(
        Body="1,2", EndpointName="sagecraft-local", ContentType="text/csv", Accept="text/csv"
    )
    raw = response["Body"]
    assert raw.status == 400
    assert raw.headers["Content-Type"] == "application/json"
    assert b"row 1 has 2 values, the model expects 4" in raw.read()

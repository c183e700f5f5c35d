"""`sagecraft serve` over real HTTP: formats, negotiation, bad requests, responsiveness, shutdown."""

from __future__ import annotations

import io
import json
import signal
import socket
import threading
import time
from pathlib import Path

import numpy as np
import orjson
import pytest
import requests

from sagemaker_tree import IRIS_FEATURES, Server, TrainingTree

SETOSA = "5.0,3.4,1.5,0.2"
VIRGINICA = "6.6,3.0,5.6,2.0"
GOOD_BODY = f"{SETOSA}\n{VIRGINICA}"
GOOD_ANSWER = "setosa\nvirginica\n"


def test_ping_answers_healthy(iris_server: Server) -> None:
    response = iris_server.session.get(f"{iris_server.url}/ping")
    assert response.status_code == 200
    assert response.json() == {"status": "healthy"}


def test_blog_request_gets_species_names(iris_server: Server) -> None:
    response = iris_server.invoke(GOOD_BODY)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/csv"
    assert response.text == GOOD_ANSWER


def test_literal_backslash_n_separates_rows(iris_server: Server) -> None:
    """As a shell passes `--body "1,2\\n3,4"`: a backslash and an n, not a newline."""
    assert iris_server.invoke(SETOSA + "\\n" + VIRGINICA).text == GOOD_ANSWER


@pytest.mark.parametrize(
    "content_type",
    [
        "text/csv",
        "text/csv; charset=utf-8",
        "TEXT/CSV",
        "text/csv;label_size=0",
        None,
    ],
)
def test_content_type_parameters_and_case_do_not_matter(
    iris_server: Server, content_type: str | None
) -> None:
    response = iris_server.invoke(GOOD_BODY, content_type=content_type)
    assert response.status_code == 200, response.text
    assert response.text == GOOD_ANSWER


def test_csv_header_row_naming_the_features_is_skipped(iris_server: Server) -> None:
    body = ",".join(IRIS_FEATURES) + "\n" + GOOD_BODY + "\n\n"
    assert iris_server.invoke(body).text == GOOD_ANSWER


@pytest.mark.parametrize(
    "document",
    [
        {"instances": [[5.0, 3.4, 1.5, 0.2], [6.6, 3.0, 5.6, 2.0]]},
        {"instances": [{"features": [5.0, 3.4, 1.5, 0.2]}, {"features": [6.6, 3.0, 5.6, 2.0]}]},
        {
            "instances": [
                dict(zip(IRIS_FEATURES, [5.0, 3.4, 1.5, 0.2], strict=True)),
                dict(zip(IRIS_FEATURES, [6.6, 3.0, 5.6, 2.0], strict=True)),
            ]
        },
        [[5.0, 3.4, 1.5, 0.2], [6.6, 3.0, 5.6, 2.0]],
    ],
)
def test_json_request_shapes(iris_server: Server, document: object) -> None:
    response = iris_server.invoke(json.dumps(document), "application/json")
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == {"predictions": ["setosa", "virginica"]}


def test_json_single_record_and_null_as_missing(iris_server: Server) -> None:
    record = dict(zip(IRIS_FEATURES, [5.0, None, 1.5, 0.2], strict=True))
    response = iris_server.invoke(json.dumps(record), "application/json")
    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": ["setosa"]}


def test_jsonlines_in_and_out(iris_server: Server) -> None:
    body = '[5.0, 3.4, 1.5, 0.2]\n{"features": [6.6, 3.0, 5.6, 2.0]}\n'
    response = iris_server.invoke(body, "application/jsonlines")
    assert response.headers["Content-Type"] == "application/jsonlines"
    assert [json.loads(line) for line in response.text.splitlines()] == ["setosa", "virginica"]


def test_npy_in_and_out(iris_server: Server) -> None:
    buffer = io.BytesIO()
    np.save(buffer, np.array([[5.0, 3.4, 1.5, 0.2], [6.6, 3.0, 5.6, 2.0]], dtype=np.float32))
    response = iris_server.invoke(buffer.getvalue(), "application/x-npy")
    assert response.headers["Content-Type"] == "application/x-npy"
    answer = np.load(io.BytesIO(response.content), allow_pickle=False)
    assert answer.tolist() == ["setosa", "virginica"]


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, "text/csv"),
        ("*/*", "text/csv"),
        ("application/json", "application/json"),
        ("application/json; charset=utf-8", "application/json"),
        ("text/csv, application/json", "text/csv"),
        ("image/png, application/jsonlines", "application/jsonlines"),
        ("text/csv;q=0.5, application/json", "application/json"),
        ("application/*", "application/json"),
        ("application/x-npy", "application/x-npy"),
    ],
)
def test_accept_negotiation_gives_bare_content_types(
    iris_server: Server, accept: str | None, expected: str
) -> None:
    response = iris_server.invoke(GOOD_BODY, accept=accept)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == expected


def test_regression_values_in_every_format(
    regression_server: Server, regression_xgboost: TrainingTree
) -> None:
    rows = [[1.0, 0.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0, 0.0]]
    body = "\n".join(",".join(map(str, row)) for row in rows)
    as_csv = [float(v) for v in regression_server.invoke(body).text.splitlines()]
    as_json = regression_server.invoke(body, accept="application/json").json()["predictions"]
    assert as_csv == pytest.approx(as_json)
    assert as_csv[0] == pytest.approx(3.0, abs=0.6)
    assert as_csv[1] == pytest.approx(-2.0, abs=0.6)


BAD_REQUESTS = {
    "too few values": (
        f"{SETOSA}\n5.0,3.4,1.5",
        "text/csv",
        None,
        400,
        "row 2 has 3 values, the model expects 4: sepal_length, sepal_width",
    ),
    "too many values": ("1,2,3,4,5", "text/csv", None, 400, "row 1 has 5 values"),
    "text in a cell": (
        "5.0,abc,1.5,0.2",
        "text/csv",
        None,
        400,
        "row 1, column 2 (sepal_width): 'abc' is not a number",
    ),
    "infinite value": (
        "5.0,inf,1.5,0.2",
        "text/csv",
        None,
        400,
        "row 1, column 2 (sepal_width): infinite values are not allowed",
    ),
    "empty body": ("", "text/csv", None, 400, "the request body is empty"),
    "blank lines only": ("\n\n", "text/csv", None, 400, "the request body is empty"),
    "invalid utf-8": (b"5.0,\xff\xfe,1.5,0.2", "text/csv", None, 400, "not UTF-8"),
    "malformed json": ('{"instances": [[1,2', "application/json", None, 400, "the body is not valid JSON"),
    "json wrong shape": ('"hello"', "application/json", None, 400, 'send {"instances"'),
    "json unknown key": ('{"rows": 5}', "application/json", None, 400, "unknown feature 'rows'"),
    "json nested too deep": (
        '{"instances": [[[1, 2, 3, 4]]]}',
        "application/json",
        None,
        400,
        "row 1 has 1 values",
    ),
    "json lists in cells": (
        '{"instances": [[[5], [3], [1], [0]]]}',
        "application/json",
        None,
        400,
        "row 1, column 1 (sepal_length): '[5]' is not a number",
    ),
    "json unknown feature": (
        '{"instances": [{"sepal_lenght": 1}]}',
        "application/json",
        None,
        400,
        "unknown feature 'sepal_lenght'",
    ),
    "json missing feature": (
        '{"instances": [{"sepal_length": 1}]}',
        "application/json",
        None,
        400,
        "lacks feature(s) sepal_width",
    ),
    "json text value": (
        '[[5, "x", 1, 1]]',
        "application/json",
        None,
        400,
        "column 2 (sepal_width): 'x' is not a number",
    ),
    "jsonlines bad line": (
        "[1,2,3,4]\n{oops",
        "application/jsonlines",
        None,
        400,
        "line 2 is not valid JSON",
    ),
    "npy garbage": (b"\x93NUMPY nonsense", "application/x-npy", None, 400, "not a .npy array"),
    "npy pickled objects": (None, "application/x-npy", None, 400, "without objects"),
    "npy wrong width": (None, "application/x-npy", None, 400, "the array has 3 columns"),
    "unsupported content type": (
        GOOD_BODY,
        "application/xml",
        None,
        415,
        "cannot read Content-Type 'application/xml'",
    ),
    "form post": (GOOD_BODY, "application/x-www-form-urlencoded", None, 415, "text/csv"),
    "unsupported accept": (GOOD_BODY, "text/csv", "image/png", 406, "cannot answer with Accept: image/png"),
}


def _npy(array: np.ndarray, allow_pickle: bool = False) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


SPECIAL_BODIES = {
    "npy pickled objects": lambda: _npy(np.array([[1, "a", None, 2]], dtype=object), True),
    "npy wrong width": lambda: _npy(np.ones((2, 3))),
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_bad_request_gets_its_status_and_the_next_request_succeeds(iris_server: Server, case: str) -> None:
    body, content_type, accept, status, phrase = BAD_REQUESTS[case]
    if body is None:
        body = SPECIAL_BODIES[case]()
    response = iris_server.invoke(body, content_type, accept)
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/json"
    error = response.json()
    assert error["code"] == status
    assert phrase in error["message"], error
    assert "Traceback" not in response.text
    assert len(response.content) < 1024
    assert iris_server.invoke(GOOD_BODY).text == GOOD_ANSWER


def test_body_over_the_limit_gets_413_and_the_server_keeps_serving(forest_server: Server) -> None:
    body = (SETOSA + "\n") * (7 * 1024 * 1024 // len(SETOSA))
    response = forest_server.invoke(body)
    assert response.status_code == 413
    assert "over the limit of 6291456" in response.json()["message"]
    assert forest_server.invoke(GOOD_BODY).text == GOOD_ANSWER


def test_chunked_body_over_a_configured_limit_gets_413(iris_forest: TrainingTree) -> None:
    server = Server(iris_forest.base, SAGECRAFT_MAX_PAYLOAD_MB="0.01").wait_ready()
    try:
        chunks = (f"{SETOSA}\n".encode() for _ in range(2000))  # no Content-Length: chunked
        response = server.invoke(chunks)
        assert response.status_code == 413
        assert "exceeds the limit of 10485 bytes" in response.json()["message"]
        assert server.invoke(GOOD_BODY).text == GOOD_ANSWER
    finally:
        server.stop()


def test_unknown_route_and_method_use_the_error_shape(forest_server: Server) -> None:
    assert forest_server.session.get(f"{forest_server.url}/nope").json()["code"] == 404
    assert forest_server.session.get(f"{forest_server.url}/invocations").json()["code"] == 405


def _large_body(rows: int) -> bytes:
    rng = np.random.default_rng(0)
    matrix = rng.uniform([4, 2, 1, 0], [8, 4.5, 7, 2.5], size=(rows, 4))
    return "\n".join(",".join(f"{v:.2f}" for v in row) for row in matrix).encode()


@pytest.mark.slow
def test_ping_answers_while_a_large_request_is_predicted(forest_server: Server) -> None:
    body = _large_body(200_000)
    outcome: dict[str, requests.Response] = {}
    worker = threading.Thread(target=lambda: outcome.update(r=forest_server.invoke(body)))
    worker.start()
    pings = []
    with requests.Session() as session:
        while worker.is_alive():
            started = time.perf_counter()
            status = session.get(f"{forest_server.url}/ping", timeout=5).status_code
            pings.append((status, time.perf_counter() - started))
            time.sleep(0.02)
    worker.join()
    assert outcome["r"].status_code == 200
    assert len(outcome["r"].text.splitlines()) == 200_000
    assert len(pings) >= 5, "the large request finished too quickly to observe"
    assert all(status == 200 for status, _ in pings)


def test_large_csv_takes_the_pyarrow_path_with_the_same_answers(forest_server: Server) -> None:
    body = _large_body(20_000)
    assert len(body) > 256 * 1024
    big = forest_server.invoke(body).text.splitlines()
    head = body.split(b"\n")[:50]
    small = forest_server.invoke(b"\n".join(head)).text.splitlines()
    assert big[:50] == small


@pytest.mark.slow
def test_sigterm_drains_in_flight_requests_and_exits(iris_forest: TrainingTree) -> None:
    server = Server(iris_forest.base).wait_ready()
    body = _large_body(150_000)
    outcome: dict[str, requests.Response] = {}
    worker = threading.Thread(target=lambda: outcome.update(r=server.invoke(body)))
    worker.start()
    time.sleep(0.5)
    started = time.monotonic()
    code = server.stop(timeout=30)
    worker.join()
    assert time.monotonic() - started < 30
    assert code == 0, server.log()
    assert outcome["r"].status_code == 200
    assert len(outcome["r"].text.splitlines()) == 150_000
    assert "stopped" in server.log()


def test_sigterm_as_the_workers_start_stops_the_server(iris_forest: TrainingTree) -> None:
    """SageMaker may stop a container at any moment. A SIGTERM that came just after the model
    loaded, before the workers were forked, was once swallowed by the closed loading loop's
    handler, and the server served on."""
    for delay in (0.0, 0.005):
        server = Server(iris_forest.base, SAGEMAKER_MODEL_SERVER_WORKERS="2")
        try:
            deadline = time.monotonic() + 60
            while "loaded random_forest model" not in server.log():
                assert server.process.poll() is None and time.monotonic() < deadline, server.log()
                time.sleep(0.001)
            time.sleep(delay)
            server.process.send_signal(signal.SIGTERM)
            assert server.process.wait(20) == 0, server.log()
            with socket.socket() as probe:  # no worker left holding the port
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind(("127.0.0.1", server.port))
        finally:
            server.stop(timeout=5)


def test_predictions_match_the_model_in_process(iris_xgboost: TrainingTree, xgboost_server: Server) -> None:
    """What the server answers is exactly what the plugin predicts for the same rows."""
    import pandas as pd

    from sagecraft.loaded_model import LoadedModel

    body = _large_body(500)
    model = LoadedModel.load(iris_xgboost.model_dir)
    frame = pd.read_csv(io.BytesIO(body), header=None, names=IRIS_FEATURES)
    expected = model.predict(frame).tolist()
    assert xgboost_server.invoke(body).text.splitlines() == expected
    probabilities = orjson.loads(xgboost_server.invoke(body, accept="application/json").content)
    assert probabilities["predictions"] == expected


@pytest.mark.parametrize("how", ["custom attributes", "accept parameter", "container default"])
def test_class_probabilities_on_request(iris_server: Server, how: str) -> None:
    server = iris_server
    if how == "container default":  # the same model folder, served with the default set
        server = Server(iris_server.base, SAGEMAKER_INFERENCE_OUTPUT="probabilities").wait_ready()
    try:
        headers = {
            "custom attributes": {"X-Amzn-SageMaker-Custom-Attributes": "trace=7,output=probabilities"},
            "accept parameter": {"Accept": "application/json; output=probabilities"},
            "container default": {},
        }[how]
        response = server.session.post(
            f"{server.url}/invocations", data=GOOD_BODY, headers={"Content-Type": "text/csv", **headers}
        )
        assert response.status_code == 200, response.text
        if response.headers["Content-Type"] == "application/json":
            rows = response.json()["predictions"]
        else:
            rows = [[float(v) for v in line.split(",")] for line in response.text.splitlines()]
        assert len(rows) == 2 and all(len(row) == 3 for row in rows)
        assert all(abs(sum(row) - 1) < 1e-6 for row in rows)
        assert rows[0][0] > 0.5 and rows[1][2] > 0.5  # setosa, then virginica
    finally:
        if server is not iris_server:
            server.stop()


def test_positive_class_probability_for_a_binary_model(tmp_path: Path) -> None:
    tree = TrainingTree(tmp_path)
    tree.add_file("train", "d.csv", "".join(f"{int(i >= 50)},{i},{i % 7}\n" for i in range(100)))
    tree.hyperparameters({"algorithm": "xgboost", "objective": "binary:logistic", "num_round": 10})
    assert tree.train().returncode == 0, tree.explain()
    server = Server(tree.base).wait_ready()
    try:
        attributes = {"X-Amzn-SageMaker-Custom-Attributes": "output=probability"}
        one = server.session.post(
            f"{server.url}/invocations", data="10,3\n90,3", headers={"Content-Type": "text/csv", **attributes}
        )
        low, high = (float(v) for v in one.text.splitlines())
        assert 0 <= low < 0.5 < high <= 1
        both = server.session.post(
            f"{server.url}/invocations",
            data="10,3\n90,3",
            headers={
                "Content-Type": "text/csv",
                "X-Amzn-SageMaker-Custom-Attributes": "output=probabilities",
            },
        )
        assert [float(line.split(",")[1]) for line in both.text.splitlines()] == [low, high]
        # The objective was the user's: by default the model answers as the built-in XGBoost does,
        # P(class 1); the label is a request away.
        assert server.invoke("10,3\n90,3").text == one.text
        label = {"X-Amzn-SageMaker-Custom-Attributes": "output=predicted_label"}
        assert server.invoke("10,3\n90,3", headers=label).text == "0\n1\n"
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("attributes", "phrase"),
    [
        (
            "output=shap",
            "output 'shap' is not one of predicted_label, probabilities, probability, raw_margin",
        ),
    ],
)
def test_unavailable_outputs_are_400(forest_server: Server, attributes: str, phrase: str) -> None:
    response = forest_server.session.post(
        f"{forest_server.url}/invocations",
        data=GOOD_BODY,
        headers={"Content-Type": "text/csv", "X-Amzn-SageMaker-Custom-Attributes": attributes},
    )
    assert response.status_code == 400
    assert phrase in response.json()["message"]
    assert forest_server.invoke(GOOD_BODY).text == GOOD_ANSWER


def test_regression_has_no_probabilities(regression_server: Server) -> None:
    response = regression_server.session.post(
        f"{regression_server.url}/invocations",
        data="1,0,0,0,0",
        headers={"Content-Type": "text/csv", "X-Amzn-SageMaker-Custom-Attributes": "output=probabilities"},
    )
    assert response.status_code == 400
    assert "regression model cannot predict 'probabilities'" in response.json()["message"]


def test_invalid_container_default_output_stops_serve(iris_forest: TrainingTree) -> None:
    server = Server(iris_forest.base, SAGEMAKER_INFERENCE_OUTPUT="predicted_label,shap")
    assert server.process.wait(60) == 1
    assert "SAGEMAKER_INFERENCE_OUTPUT='predicted_label,shap': give one or more of" in server.log()
    server.stop()

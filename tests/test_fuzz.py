"""Property-based fuzzing of every route: random and adversarial bodies, content types, accepts and
headers against the real servers. Every answer must be a 200 or a 4xx in the error shape (never a
5xx, never a traceback, never a hang), and a good request afterwards must still succeed.

The number of examples per test is FUZZ_EXAMPLES (the README's Reliability section quotes it);
HYPOTHESIS_PROFILE=thorough runs ten times as many, drawn afresh each run (CI's are the same every
run).
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator

import numpy as np
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sagemaker_tree import Server, TrainingTree, serve_models

pytestmark = pytest.mark.hardening

THOROUGH = os.environ.get("HYPOTHESIS_PROFILE") == "thorough"
FUZZ_EXAMPLES = 2000 if THOROUGH else 200
SETOSA = "5.0,3.4,1.5,0.2"
# CI runs the same examples every time (a failure is reproducible, never a flake); the thorough
# profile draws new ones on every run.
fuzz = settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    derandomize=not THOROUGH,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# --- the pieces adversarial bodies are made of -----------------------------------------------

NUMBER_TEXT = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(min_value=-(10**40), max_value=10**40).map(str),
    st.sampled_from(
        [
            "nan",
            "NaN",
            "inf",
            "-inf",
            "Infinity",
            "1e400",
            "-1e400",
            "1e-400",
            "0x10",
            "1_000",
            "",
            " ",
            '"1"',
            '"',
            "1,5",
            "\u0663",
            "\uff11",
            "NULL",
            "None",
            "true",
            "\x00",
            "9" * 400,
            "-0",
            "+1",
            ".5",
            "5.",
            "1e",
            "e5",
        ]
    ),
    st.text(max_size=12),
)
CSV_BODY = st.lists(st.lists(NUMBER_TEXT, min_size=0, max_size=7), min_size=0, max_size=12).flatmap(
    lambda rows: st.sampled_from(["\n", "\r\n", "\\n", "\r"]).map(
        lambda newline: newline.join(",".join(row) for row in rows)
    )
)
JSON_LEAF = st.one_of(
    st.none(),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.text(max_size=10),
)
JSON_VALUE = st.recursive(
    JSON_LEAF,
    lambda children: (
        st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=8), children, max_size=6)
    ),
    max_leaves=40,
)
JSON_DOCUMENT = st.one_of(
    JSON_VALUE,
    st.builds(lambda v: {"instances": v}, JSON_VALUE),
    st.builds(lambda rows: {"instances": rows}, st.lists(st.lists(JSON_LEAF, max_size=6), max_size=6)),
    st.builds(
        lambda rows: {"instances": [{"features": r} for r in rows]},
        st.lists(st.lists(JSON_LEAF, max_size=6), max_size=4),
    ),
    st.builds(
        lambda records: records,
        st.lists(
            st.dictionaries(
                st.sampled_from(["sepal_length", "sepal_width", "petal_length", "petal_width", "x", ""]),
                JSON_LEAF,
                max_size=5,
            ),
            max_size=4,
        ),
    ),
    st.integers(min_value=1, max_value=50_000).map(lambda depth: "[" * depth + "]" * depth),
).map(lambda doc: doc if isinstance(doc, str) else json.dumps(doc))


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()


NPY_BODY = st.one_of(
    st.builds(
        _npy,
        st.lists(st.floats(), min_size=0, max_size=24).flatmap(
            lambda values: st.sampled_from([(len(values),), (1, len(values)), (len(values), 1)]).map(
                lambda shape: np.array(values, dtype=float).reshape(shape)
            )
        ),
    ),
    st.builds(lambda v: _npy(np.array(v, dtype=object)), st.lists(JSON_LEAF, min_size=1, max_size=4)),
    st.binary(max_size=200).map(lambda tail: b"\x93NUMPY" + tail),
)
BODY = st.one_of(
    CSV_BODY.map(str.encode),
    JSON_DOCUMENT.map(str.encode),
    NPY_BODY,
    st.binary(max_size=2000),
    st.text(max_size=500).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.sampled_from([b"", b"\n", b"\xff\xfe\xfd", b"\xc3\x28", b"\xed\xa0\x80", b"\x00" * 64]),
)
CONTENT_TYPE = st.one_of(
    st.none(),
    st.sampled_from(
        [
            "text/csv",
            "application/json",
            "application/jsonlines",
            "application/x-npy",
            "text/CSV; charset=utf-8",
            "application/json; charset=latin-1",
            "text/plain",
            "image/png",
            "",
            ";",
            "text/",
            "/",
            "application/x-recordio-protobuf",
            "application/x-parquet",
            "text/libsvm",
            "multipart/form-data; boundary=x",
        ]
    ),
    st.text(max_size=40),
)
ACCEPT = st.one_of(
    st.none(),
    st.sampled_from(
        [
            "*/*",
            "text/csv",
            "application/json",
            "application/jsonlines",
            "application/x-npy",
            "image/png",
            "text/csv;q=0",
            "text/csv;q=abc",
            "application/json;output=probabilities",
            "text/csv; output=nonsense",
            "text/csv, application/json;q=0.5",
            ",,,",
            "*/*;q=0",
            "text/*",
        ]
    ),
    st.text(max_size=40),
)
ATTRIBUTES = st.one_of(
    st.none(),
    st.sampled_from(
        [
            "output=probabilities",
            "output=probability",
            "output=nonsense",
            "output=",
            "=",
            "a=b,c=d",
            "output=predicted_label;x=y",
        ]
    ),
    st.text(max_size=60),
    st.integers(min_value=1000, max_value=4000).map(lambda n: "x" * n),
)


def _header_safe(value: str | None) -> str | None:
    """Headers must be sendable at all: latin-1 without control characters or surrounding space
    (anything else is a transport error the client refuses to send)."""
    if value is None:
        return None
    cleaned = "".join(c for c in value if " " <= c != "\x7f")
    return cleaned.encode("latin-1", "replace").decode("latin-1").strip()


def assert_error_shape(response: requests.Response) -> None:
    """A 200, or a 4xx in the one error shape: never a 5xx, never a traceback."""
    assert response.status_code < 500, response.text
    if response.status_code == 200:
        return
    assert 400 <= response.status_code < 500, response.status_code
    assert response.headers["Content-Type"] == "application/json", response.text
    error = response.json()
    assert set(error) == {"code", "type", "message"}
    assert error["code"] == response.status_code
    assert error["message"] and len(response.content) < 2048
    assert "Traceback" not in response.text


def assert_still_serving(
    server: Server, path: str = "/invocations", headers: dict[str, str] | None = None
) -> None:
    response = server.session.post(
        f"{server.url}{path}",
        data=SETOSA,
        headers={"Content-Type": "text/csv", **(headers or {})},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    assert response.text == "setosa\n"


def _post(
    server: Server,
    path: str,
    body: bytes,
    content_type: str | None,
    accept: str | None,
    attributes: str | None,
    extra: dict[str, str] | None = None,
) -> requests.Response:
    headers = {
        "Content-Type": _header_safe(content_type) if content_type is not None else None,
        "Accept": _header_safe(accept),
        "X-Amzn-SageMaker-Custom-Attributes": _header_safe(attributes),
        **(extra or {}),
    }
    return server.session.post(
        f"{server.url}{path}",
        data=body,
        headers={k: v for k, v in headers.items() if v is not None},
        timeout=10,
    )


@fuzz
@given(body=BODY, content_type=CONTENT_TYPE, accept=ACCEPT, attributes=ATTRIBUTES)
def test_invocations_answer_every_body_with_200_or_a_4xx(
    iris_server: Server, body: bytes, content_type: str | None, accept: str | None, attributes: str | None
) -> None:
    assert_error_shape(_post(iris_server, "/invocations", body, content_type, accept, attributes))


@fuzz
@given(
    body=st.one_of(CSV_BODY.map(str.encode), JSON_DOCUMENT.map(str.encode)),
    content_type=st.sampled_from(["text/csv", "application/json", "application/jsonlines"]),
    accept=st.sampled_from(["text/csv", "application/json", "application/jsonlines", "application/x-npy"]),
)
def test_well_typed_bodies_keep_one_answer_per_row(
    forest_server: Server, body: bytes, content_type: str, accept: str
) -> None:
    """Bodies of the right type but wrong content: 400 with a message naming the problem, or one
    answer per row when they happen to be valid."""
    response = _post(forest_server, "/invocations", body, content_type, accept, None)
    assert_error_shape(response)
    if response.status_code == 400:
        assert any(
            word in response.json()["message"]
            for word in (
                "row",
                "record",
                "JSON",
                "empty",
                "UTF-8",
                "column",
                "instances",
                "feature",
                "value",
                "line",
            )
        )


@fuzz
@given(
    method=st.sampled_from(["GET", "PUT", "DELETE", "PATCH", "POST", "OPTIONS"]),
    path=st.one_of(
        st.sampled_from(
            [
                "/",
                "/ping",
                "/invocations",
                "/execution-parameters",
                "/models",
                "/models/x",
                "/openapi.json",
                "/..",
                "/%2e%2e/etc",
                "//ping",
                "/ping/",
            ]
        ),
        st.text(alphabet=st.characters(codec="ascii", exclude_characters="?#"), max_size=30).map(
            lambda p: "/" + p
        ),
    ),
    body=st.binary(max_size=200),
)
def test_any_method_and_path_gets_a_known_answer(
    forest_server: Server, method: str, path: str, body: bytes
) -> None:
    response = forest_server.session.request(method, f"{forest_server.url}{path}", data=body, timeout=10)
    assert_error_shape(response)


@pytest.fixture(scope="module")
def model_endpoint(
    tmp_path_factory: pytest.TempPathFactory, iris_forest: TrainingTree
) -> Iterator[tuple[Server, str]]:
    server, urls = serve_models(tmp_path_factory.mktemp("fuzz-mme"), forest=iris_forest.model_dir)
    url = urls["forest"]
    yield server, url
    server.stop()


URL = st.one_of(
    st.text(max_size=60),
    st.sampled_from(
        [
            "/",
            "/etc",
            "/etc/passwd",
            "..",
            "../../..",
            "/opt/ml/models/../../etc",
            "\x00",
            "~",
            "models/forest/model",
            "/proc/self",
        ]
    ),
)


@fuzz
@given(
    document=st.one_of(
        st.fixed_dictionaries({"model_name": st.one_of(st.text(max_size=30), JSON_LEAF), "url": URL}),
        JSON_VALUE,
    )
)
def test_model_api_loads_answer_every_document_with_a_4xx(
    model_endpoint: tuple[Server, str], document: object
) -> None:
    server, _ = model_endpoint
    if (
        isinstance(document, dict)
        and isinstance(document.get("url"), str)
        and document["url"].startswith("/")
        and not document["url"].startswith("/opt")
    ):
        document["url"] = str(server.base / "models") + "/.." + document["url"]  # escapes upward
    response = server.session.post(f"{server.url}/models", data=json.dumps(document), timeout=10)
    assert_error_shape(response)
    assert response.status_code != 200, response.text


@fuzz
@given(
    name=st.text(min_size=1, max_size=40).map(lambda n: requests.utils.quote(n, safe="")),
    method=st.sampled_from(["GET", "DELETE", "POST"]),
    body=BODY,
    limit=st.one_of(st.none(), st.text(max_size=8), st.integers(-5, 5000).map(str)),
    token=st.one_of(st.none(), st.text(max_size=20)),
)
def test_model_api_by_name_answers_with_a_known_status(
    model_endpoint: tuple[Server, str],
    name: str,
    method: str,
    body: bytes,
    limit: str | None,
    token: str | None,
) -> None:
    server, _ = model_endpoint
    if name == "forest":
        name = "forest2"  # keep the loaded model loaded
    path = f"/models/{name}/invoke" if method == "POST" else f"/models/{name}"
    response = server.session.request(
        method, f"{server.url}{path}", data=body, timeout=10, headers={"Content-Type": "text/csv"}
    )
    assert_error_shape(response)
    params = {k: v for k, v in {"limit": limit, "next_page_token": token}.items() if v is not None}
    listed = server.session.get(f"{server.url}/models", params=params, timeout=10)
    assert_error_shape(listed)


def test_servers_still_serve_after_fuzzing(
    forest_server: Server, xgboost_server: Server, model_endpoint: tuple[Server, str]
) -> None:
    """Runs after the fuzz tests above (pytest keeps file order): nothing was lost."""
    assert_still_serving(forest_server)
    assert_still_serving(xgboost_server)
    server, _ = model_endpoint
    assert_still_serving(server, "/models/forest/invoke")
    assert [m["modelName"] for m in server.session.get(f"{server.url}/models").json()["models"]] == ["forest"]
    for each in (forest_server, xgboost_server, server):
        assert each.process.poll() is None
        assert "Traceback" not in each.log(), each.log()[-3000:]

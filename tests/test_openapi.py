"""The OpenAPI description shipped in the package, checked against the running server by
schemathesis: every operation gets generated requests (valid and invalid by the schema), and each
answer must be a documented status with a documented content type and body, never a 5xx."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, reject, settings
from schemathesis import checks
from schemathesis.core import NotSet

from sagemaker_tree import REPO, Server, TrainingTree, serve_models

pytestmark = pytest.mark.hardening

DOCUMENT = REPO / "platform" / "serving" / "openapi.json"
schema = schemathesis.openapi.from_path(DOCUMENT)


@schemathesis.serializer("application/x-npy", "application/x-parquet")
def _npy(ctx: object, value: object) -> bytes:
    """Generated binary bodies are sent as they are: the server must refuse what is not .npy."""
    return value if isinstance(value, bytes) else str(value).encode()


@schemathesis.serializer("application/jsonlines", "text/libsvm")
def _jsonlines(ctx: object, value: object) -> bytes:
    """Generated string bodies are sent as they are (the schema says a string of lines)."""
    return value.encode("utf-8", "surrogatepass") if isinstance(value, str) else json.dumps(value).encode()


# Accepting every schema-valid body is not the contract: a CSV string is "valid" for the schema
# whatever it holds, and the server rightly answers 400 when it is not rows of numbers.
EXCLUDED = [checks.positive_data_acceptance]
MULTI_MODEL_PREFIX = "/models"
TEXT_BODIES = {"text/csv", "text/libsvm", "application/jsonlines"}


@pytest.fixture(scope="module")
def servers(
    tmp_path_factory: pytest.TempPathFactory, iris_forest: TrainingTree
) -> Iterator[dict[str, Server]]:
    multi, _ = serve_models(tmp_path_factory.mktemp("openapi-mme"), forest=iris_forest.model_dir)
    single = Server(iris_forest.base, SAGEMAKER_MODEL_SERVER_WORKERS="1").wait_ready()
    yield {"single": single, "multi": multi}
    single.stop()
    multi.stop()


@schema.parametrize()
@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
    ],
)
def test_the_server_conforms_to_its_openapi_description(
    case: schemathesis.Case, servers: dict[str, Server]
) -> None:
    multi_model = case.path.startswith(MULTI_MODEL_PREFIX)
    if multi_model and case.method == "DELETE" and case.path_parameters.get("name") == "forest":
        case.path_parameters["name"] = "not-forest"  # keep the model the other cases use
    if case.media_type in TEXT_BODIES and not isinstance(case.body, str | NotSet):
        # A number or object is no text body: sent, it would be its digits, which may well be
        # valid (a lone number is a label-only libsvm row), so the case says nothing.
        reject()
    server = servers["multi" if multi_model else "single"]
    case.call_and_validate(base_url=server.url, excluded_checks=EXCLUDED, timeout=30)


def test_the_served_description_is_the_shipped_one(servers: dict[str, Server]) -> None:
    shipped = json.loads(Path(DOCUMENT).read_text())
    multi = servers["multi"].session.get(f"{servers['multi'].url}/openapi.json").json()
    single = servers["single"].session.get(f"{servers['single'].url}/openapi.json").json()
    assert multi == shipped
    assert set(single["paths"]) == {p for p in shipped["paths"] if not p.startswith("/models")}
    assert {"/ping", "/invocations", "/execution-parameters", "/openapi.json"} <= set(single["paths"])

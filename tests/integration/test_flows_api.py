"""Flows over the admin API on both databases: CRUD, validation by node, versions and pinning,
activate/pause, templates, and the per-node counts and run paths after driving real runs."""

from __future__ import annotations

import copy
from datetime import timedelta
from decimal import Decimal
from typing import Any

from fastapi.testclient import TestClient

from tests.integration.test_flow_engine import _abandon, _customer, _order
from tests.unit.test_flow_definition import ABANDONED_CART
from winback.flows import definition, library
from winback.flows import engine as flow_engine
from winback.kernel.clock import VirtualClock
from winback.runtime import Runtime

STORED = definition.parse_flow(ABANDONED_CART).model_dump(mode="json")
NODE_TYPES = [
    ("high-value", "condition", None), ("wait-vip", "delay", None), ("mms", "action", "send_mms"),
    ("wait-casual", "delay", None), ("sms", "action", "send_sms"), ("ordered", "wait_for_event", None),
    ("thanks", "action", "send_sms"), ("reminder", "action", "send_sms"),
]  # fmt: skip


def _node(node_id: str, **counts: Any) -> dict[str, Any]:
    kind, action = next((k, a) for n, k, a in NODE_TYPES if n == node_id)
    return {
        "node_id": node_id, "type": kind, "name": None, "action": action,
        "entered": counts.get("entered", 0), "waiting": counts.get("waiting", 0),
        "passed": counts.get("passed", 0), "exited": counts.get("exited", {}),
        "outcomes": counts.get("outcomes", {}),
    }  # fmt: skip


def _untouched() -> list[dict[str, Any]]:
    return [_node(node_id) for node_id, _, _ in NODE_TYPES]


def _create(client: TestClient, name: str = "cart", flow: dict[str, Any] | None = None) -> int:
    response = client.post("/api/v1/flows", json={"name": name, "definition": flow or ABANDONED_CART})
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def test_create_list_and_get_a_flow(admin_client: TestClient) -> None:
    # when a flow is created from a definition
    response = admin_client.post(
        "/api/v1/flows", json={"name": " cart ", "description": "recover carts", "definition": ABANDONED_CART}
    )
    # then it is a draft at version 1, with its stored definition and no runs anywhere
    assert response.status_code == 201
    created = response.json()
    empty = {"runs": {"started": 0, "in_progress": 0, "completed": 0, "exited": 0}, "nodes": _untouched()}
    assert created == {
        "id": 1, "name": "cart", "description": "recover carts", "status": "draft", "current_version": 1,
        "runs_in_progress": 0, "created_at": "2026-03-02T09:00:00Z", "updated_at": "2026-03-02T09:00:00Z",
        "definition": STORED,
        "versions": [{"version": 1, "created_at": "2026-03-02T09:00:00Z", "is_current": True, "runs": 0,
                      "runs_in_progress": 0}],
        "counts": {"current_version": empty, "overall": empty},
    }  # fmt: skip
    assert admin_client.get("/api/v1/flows/1").json() == created
    # and the list shows it; a filter on another status shows nothing
    summary = {key: created[key] for key in (
        "id", "name", "description", "status", "current_version", "runs_in_progress", "created_at", "updated_at")}  # fmt: skip
    assert admin_client.get("/api/v1/flows").json() == {"items": [summary], "next_cursor": None}
    assert admin_client.get("/api/v1/flows?status=live").json() == {"items": [], "next_cursor": None}
    # and a second flow of the same name is refused, naming the field
    again = admin_client.post("/api/v1/flows", json={"name": "cart", "definition": ABANDONED_CART})
    assert (again.status_code, again.json()["error"]["field"]) == (400, "name")


def test_paging_flows_and_unknown_ids(admin_client: TestClient) -> None:
    # given three flows
    for name in ("a", "b", "c"):
        _create(admin_client, name)
    # when listed two at a time
    first = admin_client.get("/api/v1/flows?limit=2").json()
    second = admin_client.get(f"/api/v1/flows?limit=2&cursor={first['next_cursor']}").json()
    # then each appears once, in id order
    assert [item["name"] for item in first["items"]] == ["a", "b"]
    assert ([item["name"] for item in second["items"]], second["next_cursor"]) == (["c"], None)
    # and unknown ids, versions and cursors are named
    assert admin_client.get("/api/v1/flows/99").json() == {
        "error": {"code": "not_found", "message": "no flow with id 99", "field": "flow_id"}
    }
    assert admin_client.get("/api/v1/flows/1/versions/5").json() == {
        "error": {"code": "not_found", "message": "flow 1 has no version 5", "field": "version"}
    }
    assert admin_client.get("/api/v1/flows?cursor=nope").json()["error"]["field"] == "cursor"
    assert admin_client.post("/api/v1/flows/99/activate").status_code == 404


def test_an_invalid_definition_is_refused_with_every_problem_by_node(admin_client: TestClient) -> None:
    # given a flow with a dangling link, an unreachable node and a split whose shares don't add up
    flow = copy.deepcopy(ABANDONED_CART)
    flow["nodes"][1]["next"] = "nowhere"
    flow["nodes"].append({"id": "orphan", "type": "random_split", "branches": [
        {"percent": 50, "next": "sms"}, {"percent": 30, "next": "reminder"}]})  # fmt: skip
    # when it is validated, and when it is saved
    checked = admin_client.post("/api/v1/flows/validate", json={"definition": flow})
    saved = admin_client.post("/api/v1/flows", json={"name": "broken", "definition": flow})
    # then both answer 400 with every problem, each naming its node
    problems = [
        {"node_id": "wait-vip", "path": None, "message": "leads to 'nowhere', which is not a node"},
        {"node_id": "orphan", "path": None, "message": "branch shares add up to 80 %, not 100 %"},
        {"node_id": "mms", "path": None, "message": "is unreachable from 'start'"},
        {"node_id": "orphan", "path": None, "message": "is unreachable from 'start'"},
    ]
    assert checked.status_code == saved.status_code == 400
    assert (
        checked.json()
        == saved.json()
        == {
            "error": {
                "code": "invalid_input",
                "message": "invalid flow: node 'wait-vip' leads to 'nowhere', which is not a node",
                "field": "definition",
                "problems": problems,
            }
        }
    )
    # and nothing was saved
    assert admin_client.get("/api/v1/flows").json()["items"] == []
    # and a schema error names its node and its path in the body
    flow = copy.deepcopy(ABANDONED_CART)
    flow["nodes"][3]["duration"] = {"amount": 0, "unit": "hours"}
    response = admin_client.post("/api/v1/flows/validate", json={"definition": flow})
    assert response.json()["error"]["problems"] == [
        {"node_id": "wait-casual", "path": "definition.nodes.3.delay.duration.amount",
         "message": "Input should be greater than or equal to 1"},
    ]  # fmt: skip
    # and a sound definition validates, unsaved or as an edit of a saved flow
    assert admin_client.post("/api/v1/flows/validate", json={"definition": ABANDONED_CART}).json() == {
        "valid": True,
        "problems": [],
    }
    flow_id = _create(admin_client)
    assert admin_client.post(f"/api/v1/flows/{flow_id}/validate").json() == {"valid": True, "problems": []}
    edit = admin_client.post(f"/api/v1/flows/{flow_id}/validate", json={"definition": flow})
    assert (edit.status_code, edit.json()["error"]["problems"][0]["node_id"]) == (400, "wait-casual")


def test_templates_schema_and_a_flow_from_a_template(admin_client: TestClient) -> None:
    # when the library is listed
    listed = admin_client.get("/api/v1/flows/templates").json()
    # then every ready flow is there with its parameters
    assert [item["name"] for item in listed] == [info.name for info in library.templates()]
    cart = next(item for item in listed if item["name"] == "abandoned-cart")
    assert cart["parameters"][0] == {
        "name": "high_value_min_spent", "type": "number",
        "description": "Money spent (store currency, net of refunds) from which a customer is high-value.",
        "default": 500, "required": False, "minimum": 0, "maximum": None, "suggested_segment": None,
    }  # fmt: skip
    assert admin_client.get("/api/v1/flows/schema").json() == definition.json_schema()
    # when a flow is created from a template with one parameter changed
    response = admin_client.post(
        "/api/v1/flows", json={"template": "abandoned-cart", "parameters": {"reminder_after_hours": 48}}
    )
    # then it is saved under the template's title with the rendered definition
    assert response.status_code == 201
    body = response.json()
    info = library.get("abandoned-cart")
    assert (body["name"], body["description"], body["status"]) == (info.title, info.description, "draft")
    rendered = library.render("abandoned-cart", reminder_after_hours=48).model_dump(mode="json")
    assert body["definition"] == rendered
    # and an unknown parameter, a bad value or an unknown template is named
    unknown = admin_client.post("/api/v1/flows", json={"template": "abandoned-cart", "parameters": {"x": 1}})
    assert (unknown.status_code, unknown.json()["error"]["field"]) == (400, "parameters.x")
    bad = admin_client.post(
        "/api/v1/flows", json={"template": "abandoned-cart", "parameters": {"reminder_after_hours": "soon"}}
    )
    assert (bad.status_code, bad.json()["error"]["field"]) == (400, "parameters.reminder_after_hours")
    missing = admin_client.post("/api/v1/flows", json={"template": "no-such-flow"})
    assert (missing.status_code, missing.json()["error"]["field"]) == (400, "template")
    # and a body with both or neither source is refused
    both = admin_client.post(
        "/api/v1/flows", json={"name": "x", "template": "abandoned-cart", "definition": ABANDONED_CART}
    )
    assert both.status_code == 422


def test_per_node_counts_and_customer_paths_after_driving_runs(
    admin_client: TestClient, runtime: Runtime, clock: VirtualClock
) -> None:
    # given a live abandoned-cart flow and two casual shoppers and one high-value customer
    flow_id = _create(admin_client)
    assert admin_client.post(f"/api/v1/flows/{flow_id}/activate").json()["status"] == "live"
    ann, vip, cat = (
        _customer(runtime),
        _customer(runtime, orders_count=6, total_spent=Decimal("800.00")),
        _customer(runtime),
    )
    for customer_id, checkout in ((ann, "k-ann"), (vip, "k-vip"), (cat, "k-cat")):
        assert _abandon(runtime, customer_id, checkout) == 1
    # when the runs start, they wait at the delays of their branch
    assert flow_engine.step_due_runs(runtime) == 3
    counts = admin_client.get(f"/api/v1/flows/{flow_id}").json()["counts"]["current_version"]
    assert counts["nodes"][:2] == [
        _node("high-value", entered=3, passed=3, outcomes={"no": 2, "yes": 1}),
        _node("wait-vip", entered=1, waiting=1),
    ]
    assert counts["nodes"][3] == _node("wait-casual", entered=2, waiting=2)
    # when the high-value customer orders before the first message, Cat orders after her SMS,
    # and Ann never does
    clock.advance(timedelta(minutes=10))
    _order(runtime, vip)
    flow_engine.step_due_runs(runtime)
    clock.advance(timedelta(minutes=50))
    flow_engine.step_due_runs(runtime)
    clock.advance(timedelta(hours=1))
    _order(runtime, cat)
    flow_engine.step_due_runs(runtime)
    clock.advance(timedelta(hours=23))
    flow_engine.step_due_runs(runtime)
    # then every node says how many entered, passed and ended there, and why
    detail = admin_client.get(f"/api/v1/flows/{flow_id}").json()
    expected = {
        "runs": {"started": 3, "in_progress": 0, "completed": 2, "exited": 1},
        "nodes": [
            _node("high-value", entered=3, passed=3, outcomes={"no": 2, "yes": 1}),
            _node("wait-vip", entered=1, exited={"Order Completed since entry": 1}, outcomes={"exited": 1}),
            _node("mms"),
            _node("wait-casual", entered=2, passed=2, outcomes={"passed": 2}),
            _node("sms", entered=2, passed=2, outcomes={"passed": 2}),
            _node("ordered", entered=2, passed=2, outcomes={"event": 1, "timeout": 1}),
            _node("thanks", entered=1, exited={"completed": 1}, outcomes={"passed": 1}),
            _node("reminder", entered=1, exited={"completed": 1}, outcomes={"passed": 1}),
        ],
    }
    assert detail["counts"] == {"current_version": expected, "overall": expected}
    assert detail["versions"][0] | {"runs": 3, "runs_in_progress": 0} == detail["versions"][0]
    # and Cat's run shows its whole path, with each node's kind
    runs = admin_client.get(f"/api/v1/customers/{cat}/runs").json()
    assert runs["next_cursor"] is None
    (run,) = runs["items"]
    assert {key: run[key] for key in ("flow_id", "flow_name", "version", "status", "exit_reason", "node_id",
                                      "checkout_id", "entered_at", "finished_at")} == {
        "flow_id": flow_id, "flow_name": "cart", "version": 1, "status": "completed",
        "exit_reason": "completed", "node_id": "thanks", "checkout_id": "k-cat",
        "entered_at": "2026-03-02T09:00:00Z", "finished_at": "2026-03-02T11:00:00Z",
    }  # fmt: skip
    assert [(step["node_id"], step["action"], step["at"], step["outcome"]) for step in run["path"]] == [
        ("high-value", None, "2026-03-02T09:00:00Z", "entered"),
        ("high-value", None, "2026-03-02T09:00:00Z", "no"),
        ("wait-casual", None, "2026-03-02T09:00:00Z", "entered"),
        ("wait-casual", None, "2026-03-02T10:00:00Z", "passed"),
        ("sms", "send_sms", "2026-03-02T10:00:00Z", "entered"),
        ("sms", "send_sms", "2026-03-02T10:00:00Z", "passed"),
        ("ordered", None, "2026-03-02T10:00:00Z", "entered"),
        ("ordered", None, "2026-03-02T11:00:00Z", "event"),
        ("thanks", "send_sms", "2026-03-02T11:00:00Z", "entered"),
        ("thanks", "send_sms", "2026-03-02T11:00:00Z", "passed"),
    ]
    # and the flow's runs page by status, newest first
    exited = admin_client.get(f"/api/v1/flows/{flow_id}/runs?status=exited").json()
    assert [(item["customer_id"], item["exit_reason"]) for item in exited["items"]] == [
        (vip, "Order Completed since entry")
    ]
    first = admin_client.get(f"/api/v1/flows/{flow_id}/runs?limit=2").json()
    rest = admin_client.get(f"/api/v1/flows/{flow_id}/runs?limit=2&cursor={first['next_cursor']}").json()
    assert [item["customer_id"] for item in first["items"] + rest["items"]] == [cat, vip, ann]
    assert rest["next_cursor"] is None
    assert admin_client.get("/api/v1/customers/999/runs").status_code == 404


def test_edits_make_versions_and_runs_stay_pinned(
    admin_client: TestClient, runtime: Runtime, clock: VirtualClock
) -> None:
    # given a live flow with one run waiting on version 1
    flow_id = _create(admin_client)
    admin_client.post(f"/api/v1/flows/{flow_id}/activate")
    ann, bob = _customer(runtime), _customer(runtime)
    _abandon(runtime, ann, "k-ann")
    flow_engine.step_due_runs(runtime)
    # when the casual wait is edited to 3 hours
    edited = copy.deepcopy(ABANDONED_CART)
    edited["nodes"][3]["duration"] = {"amount": 3, "unit": "hours"}
    clock.advance(timedelta(minutes=5))
    response = admin_client.put(f"/api/v1/flows/{flow_id}", json={"definition": edited, "description": "v2"})
    # then version 2 is current and version 1 keeps its definition and its run
    assert response.json() == {"flow_id": flow_id, "version": 2, "created_at": "2026-03-02T09:05:00Z"}
    _abandon(runtime, bob, "k-bob")
    flow_engine.step_due_runs(runtime)
    assert admin_client.get(f"/api/v1/flows/{flow_id}/versions").json() == [
        {"version": 1, "created_at": "2026-03-02T09:00:00Z", "is_current": False, "runs": 1, "runs_in_progress": 1},
        {"version": 2, "created_at": "2026-03-02T09:05:00Z", "is_current": True, "runs": 1, "runs_in_progress": 1},
    ]  # fmt: skip
    first = admin_client.get(f"/api/v1/flows/{flow_id}/versions/1").json()
    assert (first["definition"], first["counts"]["runs"]["started"]) == (STORED, 1)
    second = admin_client.get(f"/api/v1/flows/{flow_id}/versions/2").json()
    assert second["definition"]["nodes"][3]["duration"] == {"amount": 3, "unit": "hours"}
    detail = admin_client.get(f"/api/v1/flows/{flow_id}").json()
    assert (detail["current_version"], detail["description"], detail["runs_in_progress"]) == (2, "v2", 2)
    assert detail["counts"]["current_version"]["runs"]["started"] == 1
    assert detail["counts"]["overall"]["runs"]["started"] == 2
    # and each run waits for as long as its own version says
    runs = admin_client.get(f"/api/v1/flows/{flow_id}/runs").json()["items"]
    assert [(run["customer_id"], run["version"], run["wake_at"]) for run in runs] == [
        (bob, 2, "2026-03-02T12:05:00Z"),
        (ann, 1, "2026-03-02T10:00:00Z"),
    ]


def test_pausing_stops_enrolment_while_runs_under_way_carry_on(
    admin_client: TestClient, runtime: Runtime, clock: VirtualClock
) -> None:
    # given a live flow with one run waiting
    flow_id = _create(admin_client)
    admin_client.post(f"/api/v1/flows/{flow_id}/activate")
    ann, bob = _customer(runtime), _customer(runtime)
    _abandon(runtime, ann, "k-ann")
    flow_engine.step_due_runs(runtime)
    # when the flow is paused
    paused = admin_client.post(f"/api/v1/flows/{flow_id}/pause").json()
    assert (paused["status"], paused["runs_in_progress"]) == ("paused", 1)
    # then a new abandoned checkout starts nothing
    assert _abandon(runtime, bob, "k-bob") == 0
    # and the run under way still gets its message when its hour is up
    clock.advance(timedelta(hours=1))
    assert flow_engine.step_due_runs(runtime) == 1
    counts = admin_client.get(f"/api/v1/flows/{flow_id}").json()["counts"]["current_version"]
    assert counts["nodes"][4] == _node("sms", entered=1, passed=1, outcomes={"passed": 1})
    # and activating again enrols again
    assert admin_client.post(f"/api/v1/flows/{flow_id}/activate").json()["status"] == "live"
    assert _abandon(runtime, bob, "k-bob") == 1

"""Segments and lists over the admin API on both databases, with the ready-made segments.

Customers are inserted directly, as the event processor would have left them: Ann (6 orders,
750 spent), Bob (1 order, 40 spent), Cat (no order, tagged vip), a tombstone merged into Ann and
an erased big spender — the last two must never show up anywhere.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from tests.conftest import START
from winback.db.engine import transaction
from winback.db.models import Customer, CustomerIdentity, Event
from winback.segments import library, rules

T0 = START - timedelta(days=10)
STAMP = "2026-03-02T09:00:00Z"  # the virtual clock's now, as the API writes it
HIGH_SPENDERS = {"schema_version": 1, "rule": {"type": "money_spent", "compare": {"op": "gte", "value": 30}}}


def customer_row(**fields: Any) -> Customer:
    defaults: dict[str, Any] = {"first_seen_at": T0, "last_seen_at": T0, "created_at": T0, "updated_at": T0}
    return Customer(**{**defaults, **fields})


@pytest.fixture
def people(engine: sa.Engine) -> dict[str, int]:
    with transaction(engine) as session:
        ann = customer_row(
            user_id="u-ann", email="ann@example.com", phone="+14155550123", first_name="Ann",
            last_name="Lee", country="US", orders_count=6, total_spent=Decimal("750.00"),
        )  # fmt: skip
        bob = customer_row(
            user_id="u-bob",
            email="bob@example.com",
            first_name="Bob",
            orders_count=1,
            total_spent=Decimal("40.00"),
        )
        cat = customer_row(email="cat@example.com", first_name="Cat", tags=["vip"])
        session.add_all([ann, bob, cat])
        session.flush()
        tombstone = customer_row(
            email="ann.old@example.com", merged_into_id=ann.id, total_spent=Decimal("900")
        )
        erased = customer_row(orders_count=10, total_spent=Decimal("1000.00"), erased_at=T0)
        session.add_all([tombstone, erased])
        session.flush()
        session.add(
            CustomerIdentity(customer_id=ann.id, kind="email", value="ann.old@example.com", created_at=T0)
        )
        return {"ann": ann.id, "bob": bob.id, "cat": cat.id, "tombstone": tombstone.id, "erased": erased.id}


def create(client: TestClient, name: str, definition: Any, **extra: Any) -> dict[str, Any]:
    response = client.post("/api/v1/segments", json={"name": name, "definition": definition, **extra})
    assert response.status_code == 201, response.text
    return response.json()


# --- schema and templates -----------------------------------------------------------------------


def test_schema_is_the_rule_language_json_schema(admin_client: TestClient) -> None:
    response = admin_client.get("/api/v1/segments/schema")
    assert response.status_code == 200
    assert response.json() == rules.json_schema()


def test_the_segment_api_needs_an_admin_key(client: TestClient) -> None:
    response = client.get("/api/v1/segments")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"


def test_templates_list_every_ready_made_segment(admin_client: TestClient) -> None:
    response = admin_client.get("/api/v1/segments/templates")
    assert response.status_code == 200
    assert [item["key"] for item in response.json()] == [
        "high-value", "casual-shoppers", "repeat-customers", "lapsed-90-days", "new-customers", "new-signups",
        "abandoned-checkout-this-week", "engaged", "unengaged", "birthday-next-7-days", "vip",
        "sms-subscribers", "email-subscribers",
    ]  # fmt: skip
    assert response.json()[0] == {
        "key": "high-value",
        "name": "High-value customers",
        "description": "Spent at least 500 (net of refunds) over at least 5 orders, all time.",
        "definition": library.get("high-value").definition,
    }


@pytest.mark.parametrize("template", library.TEMPLATES, ids=lambda t: t.key)
def test_every_template_is_a_valid_definition(template: library.Template) -> None:
    assert template.parsed().schema_version == 1


def test_ready_made_segments_pick_the_expected_people(
    admin_client: TestClient, people: dict[str, int]
) -> None:
    # given Ann (6 orders, 750), Bob (1 order, 40) and Cat (vip, no order)
    expected = {
        "high-value": [people["ann"]],
        "casual-shoppers": [people["bob"]],
        "repeat-customers": [people["ann"]],
        "vip": [people["cat"]],
        "lapsed-90-days": [],  # the aggregates say they ordered, but no last_order_at was recorded
    }
    for key, members in expected.items():
        template = library.get(key)
        # when each ready-made segment is saved
        segment = create(admin_client, template.name, template.definition)
        # then exactly the expected people are members
        page = admin_client.get(f"/api/v1/segments/{segment['id']}/members").json()
        assert [item["id"] for item in page["items"]] == members, key
        assert segment["member_count"] == len(members)


# --- preview ------------------------------------------------------------------------------------


def test_preview_counts_and_samples_without_saving(admin_client: TestClient, people: dict[str, int]) -> None:
    # when a rule is previewed
    response = admin_client.post("/api/v1/segments/preview", json={"definition": HIGH_SPENDERS})
    # then Ann and Bob are counted and sampled in id order, tombstone and erased profile left out
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["count"] == 2
    assert body["sample"] == [
        {
            "id": people["ann"], "user_id": "u-ann", "email": "ann@example.com", "phone": "+14155550123",
            "first_name": "Ann", "last_name": "Lee", "country": "US", "orders_count": 6,
            "total_spent": "750.00", "created_at": "2026-02-20T09:00:00Z",
        },
        {
            "id": people["bob"], "user_id": "u-bob", "email": "bob@example.com", "phone": None,
            "first_name": "Bob", "last_name": None, "country": None, "orders_count": 1,
            "total_spent": "40.00", "created_at": "2026-02-20T09:00:00Z",
        },
    ]  # fmt: skip
    assert isinstance(body["elapsed_ms"], float) and body["elapsed_ms"] >= 0
    # and nothing was saved
    assert admin_client.get("/api/v1/segments").json() == {"items": [], "next_cursor": None}


def test_preview_takes_a_bare_rule(admin_client: TestClient, people: dict[str, int]) -> None:
    response = admin_client.post(
        "/api/v1/segments/preview", json={"definition": {"type": "tag", "tag": "vip"}}
    )
    assert response.json()["count"] == 1
    assert [item["id"] for item in response.json()["sample"]] == [people["cat"]]


def test_an_invalid_rule_is_refused_with_every_path_in_the_body(admin_client: TestClient) -> None:
    definition = {
        "type": "all",
        "rules": [{"type": "money_spent", "compare": {"op": "gte", "value": "lots"}}, {"type": "tag"}],
    }
    for path in ("/api/v1/segments/preview", "/api/v1/segments"):
        response = admin_client.post(
            path,
            json={"name": "Broken", "definition": definition}
            if path.endswith("segments")
            else {"definition": definition},
        )
        assert response.status_code == 400, path
        assert response.json() == {
            "error": {
                "code": "invalid_input",
                "message": "invalid segment rule at definition.rule.rules[0].compare.value: Input should be a valid decimal",
                "field": "definition.rule.rules[0].compare.value",
                "problems": [
                    {
                        "path": "definition.rule.rules[0].compare.value",
                        "message": "Input should be a valid decimal",
                    },
                    {"path": "definition.rule.rules[1].tag", "message": "Field required"},
                ],
            }
        }
    assert admin_client.get("/api/v1/segments").json()["items"] == []


def test_a_reference_to_a_missing_segment_is_refused_with_its_path(admin_client: TestClient) -> None:
    definition = {"type": "not", "rule": {"type": "segment", "segment_id": 99}}
    response = admin_client.post("/api/v1/segments/preview", json={"definition": definition})
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "definition.rule.rule.segment_id"
    assert response.json()["error"]["message"] == (
        "invalid segment rule at definition.rule.rule.segment_id: segment 99 does not exist"
    )


def test_an_unknown_body_field_is_refused(admin_client: TestClient) -> None:
    response = admin_client.post(
        "/api/v1/segments", json={"name": "x", "definition": HIGH_SPENDERS, "color": "red"}
    )
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "color"


# --- segments CRUD ------------------------------------------------------------------------------


def test_create_answers_the_stored_segment_with_its_members_counted(
    admin_client: TestClient, people: dict[str, int]
) -> None:
    response = admin_client.post(
        "/api/v1/segments",
        json={"name": "Spenders", "description": "spent 30 or more", "definition": HIGH_SPENDERS},
    )
    assert response.status_code == 201
    segment_id = response.json()["id"]
    expected = {
        "id": segment_id,
        "name": "Spenders",
        "description": "spent 30 or more",
        "definition": HIGH_SPENDERS,  # stored as written
        "is_active": True,
        "depends_on_time": False,
        "member_count": 2,
        "created_at": STAMP,
        "updated_at": STAMP,
        "evaluated_at": STAMP,
    }
    assert response.json() == expected
    assert admin_client.get(f"/api/v1/segments/{segment_id}").json() == expected
    assert admin_client.get("/api/v1/segments").json() == {"items": [expected], "next_cursor": None}


def test_a_duplicate_name_is_refused(admin_client: TestClient) -> None:
    create(admin_client, "Spenders", HIGH_SPENDERS)
    response = admin_client.post("/api/v1/segments", json={"name": "Spenders", "definition": HIGH_SPENDERS})
    assert response.status_code == 400
    assert response.json()["error"] == {
        "code": "invalid_input",
        "message": "a segment named 'Spenders' already exists",
        "field": "name",
    }


def test_segments_are_paged_by_id(admin_client: TestClient) -> None:
    ids = [create(admin_client, f"S{n}", HIGH_SPENDERS)["id"] for n in range(3)]
    first = admin_client.get("/api/v1/segments", params={"limit": 2}).json()
    assert [item["id"] for item in first["items"]] == ids[:2]
    second = admin_client.get("/api/v1/segments", params={"limit": 2, "cursor": first["next_cursor"]}).json()
    assert [item["id"] for item in second["items"]] == ids[2:]
    assert second["next_cursor"] is None


def test_replace_re_evaluates_a_changed_rule(
    admin_client: TestClient, people: dict[str, int], clock: Any
) -> None:
    segment = create(admin_client, "Spenders", HIGH_SPENDERS)
    clock.advance(timedelta(minutes=5))
    # when the rule is replaced by "spent at least 500"
    stricter = {"type": "money_spent", "compare": {"op": "gte", "value": 500}}
    response = admin_client.put(
        f"/api/v1/segments/{segment['id']}", json={"name": "Big spenders", "definition": stricter}
    )
    # then only Ann remains, and the description left out is now none
    assert response.status_code == 200, response.text
    assert response.json() == {
        **segment,
        "name": "Big spenders",
        "definition": {"schema_version": 1, "rule": stricter},
        "member_count": 1,
        "updated_at": "2026-03-02T09:05:00Z",
        "evaluated_at": "2026-03-02T09:05:00Z",
    }
    members = admin_client.get(f"/api/v1/segments/{segment['id']}/members").json()
    assert [item["id"] for item in members["items"]] == [people["ann"]]


def test_delete_removes_the_segment(admin_client: TestClient, people: dict[str, int]) -> None:
    segment = create(admin_client, "Spenders", HIGH_SPENDERS)
    response = admin_client.delete(f"/api/v1/segments/{segment['id']}")
    assert response.status_code == 204
    assert response.content == b""
    assert admin_client.get(f"/api/v1/segments/{segment['id']}").status_code == 404
    assert admin_client.get(f"/api/v1/segments/{segment['id']}/members").status_code == 404


def test_a_segment_used_by_another_cannot_be_deleted(admin_client: TestClient) -> None:
    base = create(admin_client, "Spenders", HIGH_SPENDERS)
    create(admin_client, "Not spenders", {"type": "segment", "segment_id": base["id"], "member": False})
    response = admin_client.delete(f"/api/v1/segments/{base['id']}")
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "segment_id"
    assert admin_client.get(f"/api/v1/segments/{base['id']}").status_code == 200


def test_unknown_segment_is_404(admin_client: TestClient) -> None:
    response = admin_client.get("/api/v1/segments/4242")
    assert response.status_code == 404
    assert response.json() == {
        "error": {"code": "not_found", "message": "segment 4242 does not exist", "segment_id": 4242}
    }


# --- members ------------------------------------------------------------------------------------


def test_members_are_paged_by_customer_id(admin_client: TestClient, people: dict[str, int]) -> None:
    segment = create(admin_client, "Spenders", HIGH_SPENDERS)
    url = f"/api/v1/segments/{segment['id']}/members"
    first = admin_client.get(url, params={"limit": 1}).json()
    assert first["items"] == [
        {
            "id": people["ann"], "user_id": "u-ann", "email": "ann@example.com", "phone": "+14155550123",
            "first_name": "Ann", "last_name": "Lee", "entered_at": STAMP,
        }
    ]  # fmt: skip
    second = admin_client.get(url, params={"limit": 1, "cursor": first["next_cursor"]}).json()
    assert [item["id"] for item in second["items"]] == [people["bob"]]
    assert second["next_cursor"] is None


def test_a_tampered_cursor_is_refused(admin_client: TestClient) -> None:
    segment = create(admin_client, "Spenders", HIGH_SPENDERS)
    response = admin_client.get(f"/api/v1/segments/{segment['id']}/members", params={"cursor": "nope"})
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "cursor"


def test_members_export_as_csv_by_format_or_accept(admin_client: TestClient, people: dict[str, int]) -> None:
    segment = create(admin_client, "Spenders", HIGH_SPENDERS)
    url = f"/api/v1/segments/{segment['id']}/members"
    expected = (
        "id,user_id,email,phone,first_name,last_name,entered_at\r\n"
        f"{people['ann']},u-ann,ann@example.com,+14155550123,Ann,Lee,2026-03-02T09:00:00+00:00\r\n"
        f"{people['bob']},u-bob,bob@example.com,,Bob,,2026-03-02T09:00:00+00:00\r\n"
    )
    by_format = admin_client.get(url, params={"format": "csv"})
    assert by_format.status_code == 200
    assert by_format.headers["content-type"] == "text/csv; charset=utf-8"
    assert (
        by_format.headers["content-disposition"]
        == f'attachment; filename="segment-{segment["id"]}-members.csv"'
    )
    assert by_format.text == expected
    assert admin_client.get(url, headers={"Accept": "text/csv"}).text == expected


# --- lists --------------------------------------------------------------------------------------


def make_list(client: TestClient, name: str = "Newsletter") -> dict[str, Any]:
    response = client.post("/api/v1/lists", json={"name": name, "description": "monthly letter"})
    assert response.status_code == 201, response.text
    return response.json()


def test_list_crud(admin_client: TestClient, clock: Any) -> None:
    created = make_list(admin_client)
    assert created == {
        "id": created["id"], "name": "Newsletter", "description": "monthly letter", "member_count": 0,
        "created_at": STAMP, "updated_at": STAMP,
    }  # fmt: skip
    assert admin_client.get(f"/api/v1/lists/{created['id']}").json() == created
    assert admin_client.get("/api/v1/lists").json() == {"items": [created], "next_cursor": None}
    duplicate = admin_client.post("/api/v1/lists", json={"name": "Newsletter"})
    assert duplicate.status_code == 400
    assert duplicate.json()["error"]["field"] == "name"
    clock.advance(timedelta(minutes=1))
    renamed = admin_client.put(f"/api/v1/lists/{created['id']}", json={"name": "Letter"})
    assert renamed.json() == {
        **created,
        "name": "Letter",
        "description": None,
        "updated_at": "2026-03-02T09:01:00Z",
    }
    assert admin_client.delete(f"/api/v1/lists/{created['id']}").status_code == 204
    assert admin_client.get(f"/api/v1/lists/{created['id']}").status_code == 404


def test_adding_people_reports_added_already_there_and_unknown(
    admin_client: TestClient, people: dict[str, int]
) -> None:
    target = make_list(admin_client)
    url = f"/api/v1/lists/{target['id']}/members"
    # given Bob is already on the list
    assert admin_client.post(url, json={"user_ids": ["u-bob"]}).json()["added"] == [people["bob"]]
    # when Cat (by id), Ann (by an old email of a profile merged into hers), Bob again, an erased
    # profile and unknown people are added
    response = admin_client.post(
        url,
        json={
            "customer_ids": [people["cat"], people["erased"], 999_999],
            "emails": ["ANN.OLD@example.com", "nobody@example.com", "not-an-email"],
            "user_ids": ["u-bob", "u-ghost"],
        },
    )
    # then the found ones are added or reported as already there, the rest are named
    assert response.status_code == 200, response.text
    assert response.json() == {
        "added": [people["cat"], people["ann"]],
        "already_members": [people["bob"]],
        "not_found": {
            "customer_ids": [people["erased"], 999_999],
            "emails": ["nobody@example.com", "not-an-email"],
            "user_ids": ["u-ghost"],
            "phones": [],
        },
    }
    assert admin_client.get(f"/api/v1/lists/{target['id']}").json()["member_count"] == 3


def test_a_merged_id_is_added_as_its_surviving_profile(
    admin_client: TestClient, people: dict[str, int]
) -> None:
    target = make_list(admin_client)
    response = admin_client.post(
        f"/api/v1/lists/{target['id']}/members", json={"customer_ids": [people["tombstone"]]}
    )
    assert response.json()["added"] == [people["ann"]]


def test_an_empty_add_is_refused(admin_client: TestClient) -> None:
    target = make_list(admin_client)
    response = admin_client.post(f"/api/v1/lists/{target['id']}/members", json={})
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "customer_ids"


def test_removing_people_reports_who_was_not_on_the_list(
    admin_client: TestClient, people: dict[str, int]
) -> None:
    target = make_list(admin_client)
    url = f"/api/v1/lists/{target['id']}/members"
    admin_client.post(url, json={"customer_ids": [people["ann"], people["bob"]]})
    response = admin_client.request(
        "DELETE", url, json={"customer_ids": [people["ann"], people["cat"]], "phones": ["+4915112345678"]}
    )
    assert response.json() == {
        "removed": [people["ann"]],
        "not_members": [people["cat"]],
        "not_found": {"customer_ids": [], "emails": [], "user_ids": [], "phones": ["+4915112345678"]},
    }
    members = admin_client.get(url).json()
    assert members == {
        "items": [
            {
                "id": people["bob"], "user_id": "u-bob", "email": "bob@example.com", "phone": None,
                "first_name": "Bob", "last_name": None, "added_at": STAMP, "source": "api",
            }
        ],
        "next_cursor": None,
    }  # fmt: skip
    assert admin_client.get(url, params={"format": "csv"}).text == (
        "id,user_id,email,phone,first_name,last_name,added_at,source\r\n"
        f"{people['bob']},u-bob,bob@example.com,,Bob,,2026-03-02T09:00:00+00:00,api\r\n"
    )


def test_a_segment_on_a_list_follows_the_list(admin_client: TestClient, people: dict[str, int]) -> None:
    target = make_list(admin_client)
    segment = create(admin_client, "On the letter", {"type": "list", "list_id": target["id"]})
    assert segment["member_count"] == 0
    admin_client.post(f"/api/v1/lists/{target['id']}/members", json={"emails": ["cat@example.com"]})
    assert admin_client.get(f"/api/v1/segments/{segment['id']}").json()["member_count"] == 1
    # and a list in use cannot be deleted
    response = admin_client.delete(f"/api/v1/lists/{target['id']}")
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "list_id"


def test_csv_import_reports_each_row_by_line(
    admin_client: TestClient, people: dict[str, int], engine: sa.Engine
) -> None:
    target = make_list(admin_client)
    url = f"/api/v1/lists/{target['id']}/members"
    admin_client.post(url, json={"customer_ids": [people["bob"]]})
    body = (
        "Email Address;First name\n"  # semicolons, an alias for the email column
        "ann@example.com;Ann\n"  # line 2: added
        "bob@example.com;Bob\n"  # line 3: already there
        "\n"  # line 4: blank, skipped
        "nobody@example.com;No\n"  # line 5: not found
        "not-an-email;X\n"  # line 6: invalid
        ";Nameless\n"  # line 7: names nobody
        "ANN@example.com;Ann again\n"  # line 8: named earlier in the file
    )
    response = admin_client.post(
        f"/api/v1/lists/{target['id']}/import", content=body.encode(), headers={"Content-Type": "text/csv"}
    )
    assert response.status_code == 200, response.text
    assert response.json() == {
        "file": "body",
        "rows": 6,
        "added": 1,
        "already_members": 2,
        "not_found": 1,
        "invalid": 2,
        "lines": {"added": [2], "already_members": [3, 8], "not_found": [5], "invalid": [6, 7]},
        "problems": [
            {
                "line": 5,
                "column": "email",
                "value": "nobody@example.com",
                "reason": "no customer with this email",
            },
            {"line": 6, "column": "email", "value": "not-an-email", "reason": "not a valid email address"},
            {"line": 7, "column": "", "value": "", "reason": "no email, user_id or phone on this row"},
        ],
    }
    members = admin_client.get(url).json()["items"]
    assert [(item["id"], item["source"]) for item in members] == [
        (people["ann"], "api"),
        (people["bob"], "api"),
    ]
    # each addition is announced as a List Joined event (list-joined flows start from it)
    with engine.connect() as connection:
        joined = connection.execute(sa.select(Event.event, Event.customer_id).order_by(Event.id)).all()
        assert sorted(joined) == sorted([("List Joined", people["ann"]), ("List Joined", people["bob"])])


def test_csv_import_without_an_identifying_column_changes_nothing(admin_client: TestClient) -> None:
    target = make_list(admin_client)
    response = admin_client.post(
        f"/api/v1/lists/{target['id']}/import",
        content=b"name,city\nAnn,Paris\n",
        headers={"Content-Type": "text/csv"},
    )
    assert response.status_code == 400
    assert response.json()["error"] == {
        "code": "import_failed",
        "message": "body, line 1: no email, user_id or phone column among: name, city; nothing was imported",
        "file": "body",
        "line": 1,
    }


def test_unknown_list_is_404(admin_client: TestClient) -> None:
    for method, path in (
        ("GET", "/api/v1/lists/77"),
        ("GET", "/api/v1/lists/77/members"),
        ("POST", "/api/v1/lists/77/import"),
        ("DELETE", "/api/v1/lists/77"),
    ):
        response = admin_client.request(method, path, content=b"email\na@b.co\n")
        assert response.status_code == 404, (method, path)
        assert response.json()["error"]["message"] == "list 77 does not exist"

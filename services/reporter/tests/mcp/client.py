"""Drives the opsmesh MCP server with the official MCP Python SDK (`mcp` on PyPI).

    client.py http URL TOKEN INCIDENT_ID IDEMPOTENCY_KEY   list tools, read the incident, approve
    client.py stdio COMMAND [ARG...]                        list tools and search runbooks over stdio

Prints one JSON object with what it saw; exits 1 (with the reason on stderr) when the server
does not behave as expected.
"""

import asyncio
import json
import os
import sys

import httpx2
from mcp import Client, StdioServerParameters
from mcp.shared._httpx_utils import create_mcp_http_client

READ_TOOLS = {
    "list_incidents",
    "get_incident",
    "search_runbooks",
    "verify_audit_chain",
}
# Listed for approvers only.
DECISION_TOOLS = {"approve_action", "reject_action"}
EXPECTED_TOOLS = READ_TOOLS | DECISION_TOOLS


def check(condition, message):
    if not condition:
        print(f"FAILED: {message}", file=sys.stderr)
        sys.exit(1)


def text_of(result):
    return "".join(getattr(block, "text", "") for block in result.content)


def payload(result):
    check(not result.is_error, f"tool failed: {text_of(result)}")
    return json.loads(text_of(result))


async def http_flow(url, token, incident_id, key):
    seen = {}
    # Without a token the server refuses the connection (HTTP 401).
    async with httpx2.AsyncClient() as raw:
        response = await raw.post(
            url,
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}},
            headers={"Accept": "application/json, text/event-stream"},
        )
        check(response.status_code == 401, f"anonymous request got {response.status_code}")
        seen["anonymous_status"] = response.status_code

    http_client = create_mcp_http_client(headers={"Authorization": f"Bearer {token}"})
    from mcp.client.streamable_http import streamable_http_client

    async with http_client:
        async with Client(streamable_http_client(url, http_client=http_client)) as client:
            tools = await client.list_tools()
            names = {tool.name for tool in tools.tools}
            check(EXPECTED_TOOLS <= names, f"tools {sorted(names)}")
            seen["tools"] = sorted(names)

            listed = payload(await client.call_tool("list_incidents", {}))
            ids = [i["id"] for i in listed["incidents"]]
            check(incident_id in ids, f"{incident_id} not in {ids}")
            seen["listed"] = ids

            incident = payload(await client.call_tool("get_incident", {"incident_id": incident_id}))
            check(incident["status"] == "awaiting_approval", f"status {incident['status']}")
            spl = [e["query"] for e in incident["evidence"]]
            check(any("index=opsmesh" in q for q in spl), f"no SPL in evidence: {spl}")
            check(incident["pending_approval"]["idempotency_key"] == key, "pending key")
            check(len(incident["timeline"]) >= 3, "timeline")
            seen["evidence_spl"] = spl
            seen["runbook"] = incident["runbook"]

            chain = payload(await client.call_tool("verify_audit_chain", {"incident_id": incident_id}))
            check(chain["status"] == "intact", f"chain {chain}")
            seen["audit_chain"] = chain["status"]

            hits = payload(await client.call_tool("search_runbooks", {"query": "OOMKilled memory limit", "limit": 3}))
            check(any(h["runbook_id"] == "oom-killed" for h in hits["results"]), f"search {hits}")

            approved = payload(
                await client.call_tool(
                    "approve_action",
                    {"incident_id": incident_id, "idempotency_key": key, "comment": "approved via MCP"},
                )
            )
            check(approved["published"] is True, f"approve {approved}")
            seen["approval"] = approved

            again = await client.call_tool("reject_action", {"incident_id": incident_id})
            check(again.is_error, "a second decision must be refused")
            seen["second_decision"] = text_of(again)
    return seen


async def stdio_flow(command, args):
    seen = {}
    params = StdioServerParameters(command=command, args=args, env=dict(os.environ))
    async with Client(params) as client:
        tools = await client.list_tools()
        names = {tool.name for tool in tools.tools}
        # Without OPSMESH_MCP_TOKEN nobody may decide: the decision tools are not offered.
        check(READ_TOOLS <= names and not DECISION_TOOLS & names, f"tools {sorted(names)}")
        seen["tools"] = sorted(names)
        hits = payload(await client.call_tool("search_runbooks", {"query": "Kyverno policy denied", "limit": 3}))
        check(hits["results"], "no runbook hits")
        seen["search"] = [h["runbook_id"] for h in hits["results"]]
        listed = payload(await client.call_tool("list_incidents", {}))
        seen["incidents"] = [i["id"] for i in listed["incidents"]]
        refused = await client.call_tool("approve_action", {"incident_id": "none"})
        check(refused.is_error, "approving without a token must fail")
        seen["unauthorised"] = text_of(refused)
    return seen


def main():
    mode = sys.argv[1]
    if mode == "http":
        seen = asyncio.run(http_flow(*sys.argv[2:6]))
    elif mode == "stdio":
        seen = asyncio.run(stdio_flow(sys.argv[2], sys.argv[3:]))
    else:
        check(False, f"unknown mode {mode}")
    print(json.dumps(seen))


if __name__ == "__main__":
    main()

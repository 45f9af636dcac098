"""Every route's success response in the OpenAPI schema carries an example, so clients see real shapes."""

from __future__ import annotations

import json
import re

from app.main import create_app


def _has_example(fragment: dict, schemas: dict, seen: set[str]) -> bool:
    text = json.dumps(fragment)
    if '"example"' in text or '"examples"' in text:
        return True
    for ref in re.findall(r"#/components/schemas/([\w.\-\[\]]+)", text):
        if ref not in seen:
            seen.add(ref)
            if _has_example(schemas.get(ref, {}), schemas, seen):
                return True
    return False


def _is_binary(response: dict) -> bool:
    """A file download: its bytes have no example worth printing."""
    schemas = [media.get("schema", {}) for media in response.get("content", {}).values()]
    return bool(schemas) and all(schema.get("format") == "binary" for schema in schemas)


def test_every_route_documents_an_example_response():
    schema = create_app().openapi()
    schemas = schema["components"]["schemas"]
    missing = []
    for path, item in schema["paths"].items():
        for method, op in item.items():
            success = {
                code: r
                for code, r in op["responses"].items()
                if code.startswith("2") and code != "204" and not _is_binary(r)
            }
            if success and not any(_has_example(r, schemas, set()) for r in success.values()):
                missing.append(f"{method.upper()} {path}")
    assert missing == []

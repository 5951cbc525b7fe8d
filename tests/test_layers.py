"""The architecture holds: each layer imports only what it may (see ``tests/layers.py``)."""

from __future__ import annotations

from tests.layers import PACKAGE, graph, violations


def test_no_layer_imports_above_itself():
    """Domain never imports HTTP/WebSocket code, streams never import the web layer."""
    assert violations() == []


def test_the_checker_sees_a_violation(tmp_path):
    """A domain module importing Klein is reported (the check can fail)."""
    package = tmp_path / "cpstream"
    (package / "domain").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "domain" / "__init__.py").write_text("")
    (package / "domain" / "bad.py").write_text("import klein\nfrom cpstream.web import api\n")
    assert violations(package) == [
        "cpstream.domain.bad -> cpstream.web",
        "cpstream.domain.bad -> cpstream.web.api",
        "cpstream.domain.bad -> klein",
    ]


def test_every_module_is_in_the_graph():
    """The graph covers every module of the package."""
    modules = graph()
    assert len(modules) == len(list(PACKAGE.rglob("*.py")))
    assert "cpstream.domain.hub" in modules and "cpstream.web.api" in modules

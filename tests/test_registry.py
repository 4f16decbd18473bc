"""Registry: decorator registration, duplicates, did-you-mean, entry points."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from cxrbench._registry import Registry, RegistryError


def make() -> Registry:
    return Registry("widget", "cxrbench.test-widgets")


def test_register_and_create():
    reg = make()

    @reg.register("alpha")
    class Alpha:
        """Alpha widget.

        More text that is not the description."""

        def __init__(self, x=1):
            self.x = x

    assert reg.names() == ["alpha"]
    assert reg.create("alpha", x=3).x == 3
    assert reg.entries()[0].description == "Alpha widget."


def test_duplicate_name_is_an_error():
    reg = make()
    reg.add("alpha", object)
    with pytest.raises(RegistryError, match="duplicate widget name 'alpha'"):
        reg.add("alpha", dict)


def test_unknown_name_suggests_and_lists():
    reg = make()
    for n in ("densenet121", "resnet50", "raw"):
        reg.add(n, object)
    with pytest.raises(RegistryError) as e:
        reg.get("densenet12")
    msg = str(e.value)
    assert "Did you mean 'densenet121'" in msg
    assert "Valid widgets: densenet121, raw, resnet50" in msg
    with pytest.raises(RegistryError) as e:
        reg.get("zzzzzz")
    assert "Did you mean" not in str(e.value)


class FakeEP:
    def __init__(self, name, obj, value="pkg.mod:Obj"):
        self.name, self.obj, self.value = name, obj, value
        self.loaded = 0

    def load(self):
        self.loaded += 1
        return self.obj


def test_entry_points_are_loaded_lazily(monkeypatch):
    class Plugin:
        """A plugin widget."""

    ep = FakeEP("plug", Plugin)
    seen_groups = []

    def fake_entry_points(group):
        seen_groups.append(group)
        return [ep]

    monkeypatch.setattr("cxrbench._registry.entry_points", fake_entry_points)
    class Builtin:
        """A builtin widget."""

    reg = make()
    reg.add("builtin", Builtin)
    assert reg.names() == ["builtin", "plug"]
    assert seen_groups == ["cxrbench.test-widgets"]
    assert ep.loaded == 0  # listing names does not import the plugin
    assert reg.get("plug") is Plugin
    assert reg.get("plug") is Plugin
    assert ep.loaded == 1
    assert [e.description for e in reg.entries()] == ["A builtin widget.", "A plugin widget."]


def test_plugin_cannot_shadow_builtin(monkeypatch, caplog):
    ep = FakeEP("builtin", dict, "evil:X")
    monkeypatch.setattr("cxrbench._registry.entry_points", lambda group: [ep])
    reg = make()
    reg.add("builtin", list)
    assert reg.get("builtin") is list
    assert ep.loaded == 0
    assert "ignoring widget plugin 'builtin' (entry point evil:X)" in caplog.text


def test_builtin_registries_load_their_modules():
    import cxrbench

    assert {"raw", "random"} <= set(cxrbench.list_encoders())
    assert "tiny" in cxrbench.list_datasets()
    with pytest.raises(RegistryError, match="Did you mean 'raw'"):
        cxrbench.ENCODERS.get("rwa")


def test_broken_plugin_does_not_hide_others(monkeypatch):
    bad = SimpleNamespace(name="broken", value="nope:X", load=lambda: (_ for _ in ()).throw(ImportError("x")))
    monkeypatch.setattr("cxrbench._registry.entry_points", lambda group: [bad])
    reg = make()
    reg.add("ok", object)
    names = [e.name for e in reg.entries()]
    assert names == ["broken", "ok"]

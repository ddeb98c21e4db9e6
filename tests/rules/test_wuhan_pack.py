"""The Wuhan demo pack's synthetic layers: inside the districts, as documented, reproducible."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import shapely

from rules.kinds.base import metres_between
from rules.pack import LoadedPack, load_pack

ROOT = Path(__file__).resolve().parents[2]
WUHAN = ROOT / "rules" / "packs" / "wuhan" / "pack.yaml"
LAYERS = WUHAN.parent / "layers"
SYNTHETIC = ["schools", "no_fly", "stop_zones"]


@pytest.fixture(scope="module")
def pack() -> LoadedPack:
    return load_pack(WUHAN)


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_demo_layers", ROOT / "scripts" / "make_demo_layers.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", SYNTHETIC)
def test_every_synthetic_feature_lies_inside_the_wuhan_districts(pack: LoadedPack, name: str) -> None:
    wuhan = shapely.union_all(pack.layers["districts"].geoms)
    for zone_id, geom in zip(pack.layers[name].ids, pack.layers[name].geoms, strict=True):
        assert geom.is_valid, zone_id
        assert wuhan.contains(geom), f"{name} {zone_id} is not inside the districts"


@pytest.mark.parametrize("name", SYNTHETIC)
def test_the_synthetic_layers_say_so_and_are_wgs84(name: str) -> None:
    doc = json.loads((LAYERS / f"{name}.geojson").read_text(encoding="utf-8"))
    assert doc["source"].startswith("synthetic")
    assert doc["crs_note"].startswith("WGS-84")
    assert all(f["properties"]["synthetic"] is True for f in doc["features"])
    coords = shapely.get_coordinates([shapely.geometry.shape(f["geometry"]) for f in doc["features"]])
    lon, lat = coords[:, 0], coords[:, 1]
    assert lon.min() > 113.6 and lon.max() < 115.1 and lat.min() > 29.9 and lat.max() < 31.4  # Wuhan's box


def test_forty_schools_spread_over_the_central_districts(pack: LoadedPack) -> None:
    schools = pack.layers["schools"]
    assert schools.ids == tuple(f"school-{n:02d}" for n in range(1, 41))
    assert schools.name_of("school-01") == "第一中学"
    assert schools.name_of("school-12") == "第十二中学"
    assert schools.name_of("school-40") == "第四十中学"
    assert all(re.fullmatch(r"第[一二三四五六七八九十]+中学", n) for n in schools.names)
    districts = pack.layers["districts"]
    x, y = np.array([g.x for g in schools.geoms]), np.array([g.y for g in schools.geoms])
    found = {zones[0] for zones in districts.locate(x, y)}
    assert found <= {"420102", "420103", "420104", "420105", "420106", "420107", "420111"}
    assert len(found) >= 6
    closest = min(
        metres_between(a.x, a.y, b.x, b.y) for i, a in enumerate(schools.geoms) for b in schools.geoms[i + 1 :]
    )
    assert closest >= 900


def test_the_no_fly_zones_are_the_airport_and_four_bridge_corridors(pack: LoadedPack) -> None:
    no_fly = pack.layers["no_fly"]
    assert no_fly.ids[0] == "nofly-airport"
    assert sorted(no_fly.ids[1:]) == [
        "nofly-bridge-changjiang",
        "nofly-bridge-erqi",
        "nofly-bridge-erqiao",
        "nofly-bridge-yingwuzhou",
    ]
    airport = no_fly.geoms[0]
    assert shapely.contains_xy(airport, 114.208, 30.784)
    assert pack.layers["districts"].locate(np.array([114.208]), np.array([30.784]))[0] == ["420116"]  # Huangpi


def test_twenty_stop_zones_in_hanyang_and_wuchang(pack: LoadedPack) -> None:
    stops = pack.layers["stop_zones"]
    assert len(stops.ids) == 20
    districts = dict(zip(pack.layers["districts"].ids, pack.layers["districts"].geoms, strict=True))
    for zone_id, props, geom in zip(stops.ids, stops.properties, stops.geoms, strict=True):
        assert props["district"] in ("420105", "420106"), zone_id
        assert districts[props["district"]].contains(geom), zone_id
        assert 1000 < geom.area * (111_195**2) * np.cos(np.radians(geom.centroid.y)) < 3000  # about 60 m × 30 m


def test_the_layer_script_regenerates_the_committed_files_byte_for_byte() -> None:
    built = _script().build(LAYERS / "districts.geojson")
    assert sorted(built) == sorted(f"{n}.geojson" for n in SYNTHETIC)
    for name, text in built.items():
        assert (LAYERS / name).read_text(encoding="utf-8") == text, f"{name}: run scripts/make_demo_layers.py"


def test_provenance_documents_the_synthetic_layers() -> None:
    text = (LAYERS / "PROVENANCE.md").read_text(encoding="utf-8")
    for name in SYNTHETIC:
        assert f"{name}.geojson" in text
    assert "synthetic" in text.lower()
    assert "scripts/make_demo_layers.py" in text

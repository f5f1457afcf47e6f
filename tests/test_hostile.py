"""Whatever a user feeds the loader or the CLI: a clear ValueError or one line on stderr."""
import json
import os
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from visiontales.data.vist import load_vist

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 7) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["annotations", "story_id", "photo_flickr_id", "worker_arranged_photo_order",
                         "text", "album_id", "albums", "id", "vist_label"]), inner, max_size=6),
    max_leaves=25)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=json_values)
def test_any_json_gives_a_dataset_or_a_value_error(tmp_path, data):
    (tmp_path / "images").mkdir(exist_ok=True)
    path = tmp_path / "sis.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    try:
        dataset = load_vist(path, tmp_path / "images", progress=False)
    except ValueError as err:
        assert "sis.json" in str(err)                      # the message names the file
    else:
        assert len(dataset) == 0                           # no images exist: nothing survives


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=200))
def test_any_bytes_give_a_dataset_or_a_value_error(tmp_path, raw):
    (tmp_path / "images").mkdir(exist_ok=True)
    path = tmp_path / "sis.json"
    path.write_bytes(raw)
    try:
        load_vist(path, tmp_path / "images", progress=False)
    except ValueError as err:
        assert "sis.json" in str(err)


@pytest.mark.slow
def test_cli_reports_a_broken_annotation_file_in_one_line(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "sis.json").write_bytes(b'{"annotations": [[{"story_id": "1", \xff')
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-m", "visiontales", "train", "--tiny", "--annotations",
                          str(tmp_path / "sis.json"), "--images", str(tmp_path / "images")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert "sis.json" in out.stderr

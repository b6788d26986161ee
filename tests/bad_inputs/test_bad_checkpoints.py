"""``dcn-deploy convert`` given bad weight files and options: a one-line error naming the file or the
option, exit code 2; a pickle that would run code is refused and never runs (its marker file stays absent)."""
from __future__ import annotations

import os
import pickle
import re
import struct

import numpy as np
import pytest
import torch
from bad_inputs.cli_result import cli_error
from safetensors.torch import save_file


class RunsCode:
    """Unpickling this runs ``touch MARKER``: what a malicious checkpoint does."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _safetensors_bytes(tmp_path) -> bytes:
    """A valid checkpoint of one mmcv DCNv2 layer ``dcn`` (4 -> 4 channels, 3x3)."""
    save_file({"dcn.weight": torch.zeros(4, 4, 3, 3), "dcn.bias": torch.zeros(4),
               "dcn.conv_offset.weight": torch.zeros(27, 4, 3, 3), "dcn.conv_offset.bias": torch.zeros(27)},
              str(tmp_path / "good.safetensors"))
    return (tmp_path / "good.safetensors").read_bytes()



# (id, file name, its content (bytes or a writer of the path), extra options, message)
CASES = [
    ("pickle_runs_code_in_torch_zip", "evil.pth", lambda p: torch.save({"w": torch.zeros(2), "x": RunsCode(p.with_name("MARKER"))}, p), [],
     "not loadable as plain weights \\(weights_only=True, nothing in it was run\\): .*GLOBAL posix.system"),
    ("pickle_runs_code_plain_pickle", "evil.pt", lambda p: p.write_bytes(pickle.dumps(RunsCode(p.with_name("MARKER")), protocol=2)), [],
     "not loadable as plain weights \\(weights_only=True, nothing in it was run\\): .*posix.system"),
    ("pickle_list_not_dict", "list.pth", lambda p: torch.save([torch.zeros(1)], p), [], "expected a dict of tensors, got list"),
    ("pickle_without_tensors", "none.pth", lambda p: torch.save({"epoch": 3}, p), [], "holds no tensors"),
    ("safetensors_truncated", "t.safetensors", lambda p: p.write_bytes(_safetensors_bytes(p.parent)[:100]), [],
     "not a valid safetensors file \\(truncated or corrupt\\?\\): "),
    ("safetensors_header_too_large", "h.safetensors", struct.pack("<Q", 1 << 40) + b"{}", [], "not a valid safetensors file .*header too large"),
    ("safetensors_header_not_json", "j.safetensors", struct.pack("<Q", 5) + b"{abc}", [], "not a valid safetensors file .*invalid JSON"),
    ("npz_object_array", "o.npz", lambda p: np.savez(p, a=np.array([{"x": 1}], dtype=object)), [], "array 'a' is not numeric"),
    ("npz_truncated", "t.npz", lambda p: (np.savez(p, a=np.zeros(100)), p.write_bytes(p.read_bytes()[:60])), [], "not a valid .npz file"),
    ("mxnet_params_truncated", "t.params", b"\x12\x01\x00\x00\x00\x00\x00\x00" + b"\x00" * 5, [], "truncated MXNet params file"),
    ("unknown_suffix", "w.txt", b"weights", [], "unknown weight file type '.txt'"),
    ("missing_file", "absent.pth", None, [], "no weight file at"),
    ("wrong_source", "good.safetensors", lambda p: _safetensors_bytes(p.parent), ["--source", "caffe"], "unknown source 'caffe'; known: auto, "),
    ("wrong_keys_for_recipe", "good.safetensors", lambda p: _safetensors_bytes(p.parent), ["--recipe", "demo"],
     "the converted weights do not fit recipe 'demo': missing \\[.*\\] \\.\\.\\., unexpected \\['dcn.bias'"),
    ("unknown_recipe", "good.safetensors", lambda p: _safetensors_bytes(p.parent), ["--recipe", "nosuch"], "no recipe 'nosuch'"),
    ("uiiurz1_negative_padding", "u.safetensors", lambda p: save_file({"p_conv.weight": torch.zeros(18, 4, 3, 3),
     "p_conv.bias": torch.zeros(18), "conv.weight": torch.zeros(4, 4, 3, 3)}, str(p)), ["--source", "4uiiurz1", "--padding", "-1"],
     "4uiiurz1: padding must be >= 0, got -1"),
    ("uiiurz1_missing_keys", "p.safetensors", lambda p: save_file({"p_conv.weight": torch.zeros(18, 4, 3, 3)}, str(p)),
     ["--source", "4uiiurz1"], "no DCN layer of any known source in the checkpoint \\(1 keys, e.g. p_conv.weight\\)"),
    ("wrong_output_suffix", "good.safetensors", lambda p: _safetensors_bytes(p.parent), ["-o", "OUT/w.txt"], "write .safetensors or .pt"),
]


@pytest.mark.bad_input
@pytest.mark.parametrize("bad", CASES, ids=lambda b: b[0])
def test_convert_rejects_bad_checkpoint(bad, tmp_path):
    _, name, content, options, message = bad
    path = tmp_path / name
    if content is not None:
        if callable(content) and not isinstance(content, bytes):
            written = content(path)
            if isinstance(written, bytes):
                path.write_bytes(written)
        else:
            path.write_bytes(content)
    options = [o.replace("OUT", str(tmp_path)) for o in options]
    source = [] if "--source" in options else ["--source", "mmcv"]
    output = [] if "-o" in options else ["-o", str(tmp_path / "out.safetensors")]
    line = cli_error(["convert", str(path), *output, *source, *options])
    assert re.search(message, line), line
    assert not (tmp_path / "MARKER").exists(), "unpickling ran code from the checkpoint"
    assert not (tmp_path / "out.safetensors").exists()


def test_the_marker_payload_does_run_when_unpickled_unsafely(tmp_path):
    """The malicious pickle of the catalogue is real: plain pickle.loads runs it (so the cases above,
    whose marker stays absent, show that convert never unpickled it that way)."""
    pickle.loads(pickle.dumps(RunsCode(tmp_path / "MARKER"), protocol=2))
    assert (tmp_path / "MARKER").exists()

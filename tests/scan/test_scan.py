"""refmount scan: NetCDF4/HDF5 files written with h5py -> references -> the mount, xarray and
fsspec read the same values as h5py; combining checks everything that could go silently wrong."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

from tests.conftest import run_cli

NY, NX = 6, 8


def _write(path, start: int, steps: int, units: str, scale: float = 1.0, dtype="f4", extra=True):
    """A NetCDF4-style file: time (unlimited, CF units), lat, lon, t2m (time, lat, lon) chunked
    with shuffle + gzip, a contiguous big-endian orog, a compact variable."""
    rng = np.random.default_rng(start)
    with h5py.File(path, "w") as f:
        f.attrs["title"] = "scan test"
        t = f.create_dataset("time", data=(np.arange(start, start + steps) * 6 / scale), maxshape=(None,), chunks=(16,))
        t.attrs["units"] = units
        t.attrs["calendar"] = "standard"
        for name, n in (("lat", NY), ("lon", NX)):
            f.create_dataset(name, data=np.linspace(-50, 50, n).astype("f4"))
        for name in ("time", "lat", "lon"):
            f[name].make_scale(name)
        field = f.create_dataset("t2m", data=(rng.normal(280, 5, (steps, NY, NX))).astype(dtype), chunks=(1, NY, NX),
                                 compression="gzip", shuffle=True, maxshape=(None, NY, NX))
        field.attrs["units"] = "K"
        orog = f.create_dataset("orog", data=np.arange(NY * NX, dtype=">f4").reshape(NY, NX))
        for ds, dims in ((field, ("time", "lat", "lon")), (orog, ("lat", "lon"))):
            for axis, dim in enumerate(dims):
                ds.dims[axis].attach_scale(f[dim])
        if extra:
            f.create_dataset("flag", data=np.array([1, 2, 3], dtype="i2"))
            f.create_dataset("names", data=["a", "bb"], dtype=h5py.string_dtype())  # small strings: inline
            ragged = f.create_dataset("ragged", shape=(2,), dtype=h5py.vlen_dtype(np.int32))  # left out
            ragged[0], ragged[1] = [1], [2, 3]
    return str(path)


@pytest.fixture
def archive(tmp_path):
    files = [_write(tmp_path / "a_0.nc", 0, 4, "hours since 2024-01-01 00:00:00"),
             _write(tmp_path / "a_1.nc", 4, 4, "days since 2024-01-01", scale=24.0),  # other units: same instants
             _write(tmp_path / "a_2.nc", 8, 3, "hours since 2024-01-01T06:00:00Z")]
    with h5py.File(files[2], "a") as f:  # this file's epoch is 6 h later: its values are 6 h smaller
        f["time"][...] = f["time"][...] - 6
    return tmp_path, files


def _expected(files):
    t2m = np.concatenate([h5py.File(p)["t2m"][...] for p in files])
    times = np.datetime64("2024-01-01T00:00") + np.arange(11) * np.timedelta64(6, "h")
    return t2m, times


def test_scan_combine_and_read_through_the_mount(archive, mount):
    import xarray

    directory, files = archive
    out = directory / "refs.json"
    result = run_cli("scan", str(directory / "a_*.nc"), "-o", str(out), "-j", "2")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("refmount: scanned 3 file(s)") and f"-> {out}" in result.stdout
    assert "ragged" in result.stderr and "variable-length" in result.stderr  # said, and left out
    t2m, times = _expected(files)
    with mount(str(out)) as root:
        ds = xarray.open_zarr(root)
        np.testing.assert_array_equal(ds["t2m"].values, t2m)
        np.testing.assert_array_equal(ds["time"].values.astype("datetime64[m]"), times)
        np.testing.assert_array_equal(ds["orog"].values, h5py.File(files[0])["orog"][...])
        np.testing.assert_array_equal(ds["flag"].values, [1, 2, 3])
        assert "ragged" not in ds and ds.attrs["title"] == "scan test" and ds["t2m"].dims == ("time", "lat", "lon")
        assert ds["names"].values.tolist() == ["a", "bb"]
    refs = json.loads(out.read_text())["refs"]
    assert json.loads(refs["t2m/.zarray"])["filters"] == [{"id": "shuffle", "elementsize": 4}, {"id": "zlib", "level": 4}]
    single = run_cli("scan", files[0], "-o", str(directory / "one.json"), "-j", "1")
    assert single.returncode == 0, single.stderr


def test_the_output_reads_the_same_through_fsspec(archive):
    import fsspec
    import zarr

    directory, files = archive
    out = directory / "refs.json.zst"
    assert run_cli("scan", *files, "-o", str(out)).returncode == 0
    import zstandard

    refs = json.loads(zstandard.ZstdDecompressor().decompress(out.read_bytes(), max_output_size=1 << 28))
    fs = fsspec.filesystem("reference", fo=refs)
    group = zarr.open_group(fs.get_mapper(""), mode="r", zarr_format=2)
    np.testing.assert_array_equal(group["t2m"][...], _expected(files)[0])


def test_parallel_and_serial_scans_are_identical(archive):
    directory, files = archive
    for jobs in ("1", "2"):
        assert run_cli("scan", *files, "-o", str(directory / f"j{jobs}.json"), "-j", jobs).returncode == 0
    assert (directory / "j1.json").read_text() == (directory / "j2.json").read_text()


@pytest.mark.parametrize("break_it, fragment", [
    (lambda d: _write(d / "a_1.nc", 4, 4, "hours since 2024-01-01", dtype="f8"), "dtype differs between"),
    (lambda d: _write(d / "a_0.nc", 0, 3, "hours since 2024-01-01"), None),  # 3 steps: fine, chunks are 1 step
    (lambda d: _write(d / "a_1.nc", 4, 4, "hours since 2024-01-01", extra=False), "is in"),
])
def test_combining_mismatches_are_one_line_errors(archive, break_it, fragment):
    directory, files = archive
    break_it(directory)
    result = run_cli("scan", str(directory / "a_*.nc"), "-o", str(directory / "x.json"))
    if fragment is None:
        assert result.returncode == 0, result.stderr
        return
    assert result.returncode == 1 and "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("refmount: ") and fragment in last, result.stderr


def test_static_variables_must_match_and_chunks_must_line_up(tmp_path):
    a = _write(tmp_path / "a.nc", 0, 4, "hours since 2024-01-01")
    b = _write(tmp_path / "b.nc", 4, 4, "hours since 2024-01-01")
    with h5py.File(b, "a") as f:
        f["orog"][0, 0] = -1  # a static field that differs
    result = run_cli("scan", a, b, "-o", str(tmp_path / "x.json"))
    assert result.returncode == 1 and "orog has no concatenated dimension but differs between" in result.stderr
    with h5py.File(tmp_path / "c.nc", "w") as f:
        f.create_dataset("time", data=np.arange(3.0), maxshape=(None,), chunks=(2,)).make_scale("time")
        f.create_dataset("v", data=np.arange(3.0), chunks=(2,), maxshape=(None,)).dims[0].attach_scale(f["time"])
    with h5py.File(tmp_path / "d.nc", "w") as f:
        f.create_dataset("time", data=np.arange(3.0, 6.0), maxshape=(None,), chunks=(2,)).make_scale("time")
        f.create_dataset("v", data=np.arange(3.0), chunks=(2,), maxshape=(None,)).dims[0].attach_scale(f["time"])
    result = run_cli("scan", str(tmp_path / "c.nc"), str(tmp_path / "d.nc"), "-o", str(tmp_path / "y.json"))
    assert result.returncode == 1 and "not a multiple of the chunk length 2" in result.stderr


def test_a_chunk_stored_with_a_filter_skipped_leaves_its_variable_out(tmp_path):
    path = tmp_path / "masked.h5"
    with h5py.File(path, "w") as f:
        d = f.create_dataset("v", shape=(4,), chunks=(2,), dtype="i4", compression="gzip")
        d[0:2] = [1, 2]
        d.id.write_direct_chunk((2,), np.array([3, 4], dtype="i4").tobytes(), filter_mask=1)  # gzip skipped
        f.create_dataset("ok", data=np.arange(4))
    result = run_cli("scan", str(path), "-o", str(tmp_path / "m.json"))
    assert result.returncode == 0, result.stderr
    assert "variable v: chunk (2,) is stored with filters skipped" in result.stderr
    refs = json.loads((tmp_path / "m.json").read_text())["refs"]
    assert "v/.zarray" not in refs and "ok/.zarray" in refs


def test_names_a_zarr_tree_cannot_hold_are_left_out_with_a_warning(tmp_path, mount):
    """An HDF5 dataset called .zgroup at the root made a set no reader could open ("key
    '.zgroup' is both a file and a directory"); one called .zarray in a group, or a group called
    .zattrs, made a tree Zarr reads wrongly. They are left out, said once each."""
    with h5py.File(tmp_path / "w.nc", "w") as f:
        f.create_dataset(".zgroup", data=np.arange(4))
        f.create_group("g").create_dataset(".zarray", data=np.arange(4))
        group = f.create_group(".zattrs")
        group.create_dataset("v", data=np.arange(3))
        group.create_group("sub").create_dataset("w", data=np.arange(2))
        f.create_dataset("ok", data=np.arange(5, dtype="i4"))
    out = tmp_path / "w.json"
    result = run_cli("scan", tmp_path / "w.nc", "-o", out)
    assert result.returncode == 0, result.stderr
    said = [line for line in result.stderr.splitlines() if "Zarr metadata file's" in line]
    assert [line.split("w.nc: ", 1)[1] for line in said] == [
        "group .zattrs: its name is a Zarr metadata file's; left out, with all in it",
        "variable .zgroup: its name is a Zarr metadata file's; left out",
        "variable g/.zarray: its name is a Zarr metadata file's; left out"], said
    assert "3 variable(s) or group(s) left out" in result.stdout
    with mount(str(out)) as root:
        assert sorted(os.listdir(root)) == [".zgroup", ".zmetadata", "g", "ok"]
        assert sorted(os.listdir(os.path.join(root, "g"))) == [".zgroup"]
        assert np.frombuffer(open(os.path.join(root, "ok", "0"), "rb").read(), "<i4").tolist() == [0, 1, 2, 3, 4]


def test_bad_inputs_are_one_line(tmp_path):
    (tmp_path / "not.nc").write_bytes(b"plain text")
    (tmp_path / "empty.nc").mkdir()
    for args, fragment in (([str(tmp_path / "nope*.nc")], "no such file"), ([str(tmp_path / "not.nc")], "not a netCDF3, NetCDF4 or HDF5"),
                           ([str(tmp_path / "empty.nc")], "empty.nc: a directory with no .nc, .nc4, .cdf, .h5, .hdf5, .he5 files in it")):
        result = run_cli("scan", *args, "-o", str(tmp_path / "x.json"))
        assert result.returncode == 1 and "Traceback" not in result.stderr and fragment in result.stderr
    assert not os.path.exists(tmp_path / "x.json")


def test_output_compressed_as_its_name_says_reads_back(archive, tmp_path):
    """`-o refs.json.gz` used to write plain JSON under a .gz name, which refmount itself then
    could not read ("cannot decompress (gzip)"); every suffix a reference file is read with is
    written so. A directory as the output is refused before the scan."""
    from refmount.sources import open_source

    directory, files = archive
    plain = tmp_path / "refs.json"
    assert run_cli("scan", files[0], "-o", plain).returncode == 0
    want = sorted(open_source(str(plain)).items())
    for suffix, magic in ((".gz", b"\x1f\x8b"), (".bz2", b"BZh"), (".xz", b"\xfd7zXZ\x00"), (".zst", b"\x28\xb5\x2f\xfd")):
        out = tmp_path / f"refs.json{suffix}"
        result = run_cli("scan", files[0], "-o", out)
        assert result.returncode == 0, result.stderr
        assert out.read_bytes().startswith(magic) and sorted(open_source(str(out)).items()) == want
    bad = run_cli("scan", files[0], "-o", tmp_path)
    assert bad.returncode == 1 and bad.stderr.strip() == f"refmount: {tmp_path}: is a directory (the output is a reference file)"


def test_directories_matched_by_a_glob_stand_for_their_files(tmp_path):
    """``scan '/archive/20*'`` over year directories scans the files in them; a directory whose
    name ends in .nc among the matches is expanded too, not taken for a file."""
    from refmount.scan import expand

    for year, name in (("2023", "a.nc"), ("2024", "b.nc"), ("2024", "notes.txt"), ("x.nc", "c.nc")):
        (tmp_path / year).mkdir(exist_ok=True)
        (tmp_path / year / name).write_bytes(b"")
    (tmp_path / "2024" / "sub.nc").mkdir()
    assert expand([str(tmp_path / "20*")]) == [str(tmp_path / "2023" / "a.nc"), str(tmp_path / "2024" / "b.nc")]
    assert expand([str(tmp_path / "*.nc")]) == [str(tmp_path / "x.nc" / "c.nc")]


def test_mounting_an_archive_directly_keeps_the_scan(archive, mount, tmp_path):
    """``refmount '/archive/*.nc' MNT``: scanned at mount, the result kept in the cache directory;
    a remount with unchanged files does not scan again, a changed original is scanned again."""
    import xarray

    directory, files = archive
    cache = tmp_path / "cache"
    log = tmp_path / "log"
    t2m, _ = _expected(files)
    for scans, kept in ((1, 0), (1, 1)):  # the first mount scans, the second finds it kept
        with mount(str(directory / "a_*.nc"), cache_dir=str(cache), log_file=str(log)) as root:
            np.testing.assert_array_equal(xarray.open_zarr(root)["t2m"].values, t2m)
        text = log.read_text()
        assert (text.count("nc: scanned"), text.count("scan kept from an earlier mount")) == (scans, kept), text
    assert len(list((cache / "indexes").iterdir())) == 1
    _write(directory / "a_2.nc", 8, 3, "hours since 2024-01-01")  # rewritten: new values, same times
    with h5py.File(files[2], "a") as f:
        f["time"][...] = np.arange(8, 11) * 6.0
    with mount(str(directory / "a_*.nc"), cache_dir=str(cache), log_file=str(log)) as root:
        np.testing.assert_array_equal(xarray.open_zarr(root)["t2m"].values, _expected(files)[0])
    assert len(list((cache / "indexes").iterdir())) == 2  # scanned again, kept again


def test_inspect_and_check_take_an_archive(archive):
    directory, files = archive
    result = run_cli("inspect", "--json", str(directory / "a_*.nc"))
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    t2m = next(a for a in summary["arrays"] if a["path"] == "t2m")
    assert t2m["shape"] == [11, NY, NX] and t2m["refs"]["ranged"] == 11 and summary["origin_files"] == 3
    (directory / "mnt").mkdir()
    assert run_cli("check", str(directory / "a_*.nc"), str(directory / "mnt")).returncode == 0
    bad = run_cli("check", str(directory / "zz_*.nc"), str(directory / "mnt"))
    assert bad.returncode == 1 and "no such file" in bad.stderr


def test_plugin_filters_numcodecs_decodes_are_read_and_others_left_out(tmp_path, mount):
    """HDF5 plugin filters (hdf5plugin): blosc and zstd frames are what numcodecs decodes; the
    LZ4 and bitshuffle plugins frame their data their own way: those variables are left out, said."""
    import xarray

    import subprocess
    import sys

    pytest.importorskip("hdf5plugin")
    values = np.arange(4000, dtype="f4").reshape(40, 100) / 7
    path = tmp_path / "plugins.h5"
    # written in a fresh interpreter without HDF5_PLUGIN_PATH: importing netCDF4 (as other tests
    # here do) points it at netCDF4's own plugins, built for another HDF5 library
    env = {k: v for k, v in os.environ.items() if k != "HDF5_PLUGIN_PATH"}
    subprocess.run([sys.executable, "-c", f"""
import h5py, hdf5plugin, numpy as np
values = np.arange(4000, dtype="f4").reshape(40, 100) / 7
with h5py.File({str(path)!r}, "w") as f:
    f.create_dataset("blosc", data=values, chunks=(10, 100), **hdf5plugin.Blosc(cname="lz4", clevel=5, shuffle=1))
    f.create_dataset("blosc_zstd", data=values, chunks=(10, 50), **hdf5plugin.Blosc(cname="zstd", shuffle=2))
    f.create_dataset("zstd", data=values, chunks=(20, 100), **hdf5plugin.Zstd())
    f.create_dataset("lz4", data=values, chunks=(20, 100), **hdf5plugin.LZ4())
    f.create_dataset("bitshuffle", data=values, chunks=(20, 100), **hdf5plugin.Bitshuffle())
"""], check=True, timeout=60, env=env)
    result = run_cli("scan", str(path), "-o", str(tmp_path / "p.json"))
    assert result.returncode == 0, result.stderr
    assert "variable lz4: filter lz4 (HDF5 filter 32004)" in result.stderr
    assert "variable bitshuffle: filter bitshuffle (HDF5 filter 32008)" in result.stderr
    with mount(str(tmp_path / "p.json")) as root:
        ds = xarray.open_zarr(root, consolidated=False)
        assert sorted(ds.data_vars) == ["blosc", "blosc_zstd", "zstd"]
        for name in ds.data_vars:
            np.testing.assert_array_equal(ds[name].values, values)


def _same_refs_but_urls(remote: dict, local: dict, prefix: str, directory) -> None:
    assert remote.keys() == local.keys()
    for key, value in local.items():
        if isinstance(value, list):
            assert remote[key] == [value[0].replace(str(directory), prefix), *value[1:]], key
        else:
            assert remote[key] == value, key


def test_scan_of_http_originals_reads_blocks_through_the_origins(archive, http_origin, mount):
    """Originals on the loopback HTTP server: the same references as the local scan (other URLs),
    a request per 1 MiB block at most -- not one per HDF5 metadata read -- and the mount reads them."""
    import shutil

    import xarray

    directory, files = archive
    for path in files:
        shutil.copy(path, http_origin.dir)
    urls = [f"{http_origin.url}/{os.path.basename(p)}" for p in files]
    assert run_cli("scan", *files, "-o", str(directory / "local.json")).returncode == 0
    http_origin.reset()
    result = run_cli("scan", *urls, "-o", str(directory / "http.json"), "-j", "1")
    assert result.returncode == 0, result.stderr
    assert http_origin.counts["GET"] + http_origin.counts["HEAD"] <= 2 * len(files), http_origin.counts
    remote = json.loads((directory / "http.json").read_text())["refs"]
    _same_refs_but_urls(remote, json.loads((directory / "local.json").read_text())["refs"], http_origin.url, directory)
    with mount(str(directory / "http.json")) as root:
        np.testing.assert_array_equal(xarray.open_zarr(root)["t2m"].values, _expected(files)[0])
    missing = run_cli("scan", f"{http_origin.url}/nope.nc", "-o", str(directory / "x.json"))
    assert missing.returncode == 1 and "nope.nc" in missing.stderr and "Traceback" not in missing.stderr


def test_scan_of_s3_originals(archive, s3_endpoint, tmp_path, mount):
    import s3fs
    import zarr

    directory, files = archive
    fs = s3fs.S3FileSystem(key="testing", secret="testing", client_kwargs={"endpoint_url": s3_endpoint})
    fs.mkdir("scans")
    for path in files:
        fs.put(path, f"scans/{os.path.basename(path)}")
    result = run_cli("scan", "s3://scans/a_*.nc", "-o", str(tmp_path / "s3.json"), "--storage-options",
                     f"s3.endpoint_url={s3_endpoint}", "--storage-options", "s3.key=testing",
                     "--storage-options", "s3.secret=testing")
    assert result.returncode == 0, result.stderr
    assert run_cli("scan", *files, "-o", str(tmp_path / "local.json")).returncode == 0
    remote = json.loads((tmp_path / "s3.json").read_text())["refs"]
    _same_refs_but_urls(remote, json.loads((tmp_path / "local.json").read_text())["refs"], "s3://scans", directory)
    options = {"s3": {"endpoint_url": s3_endpoint, "key": "testing", "secret": "testing"}}
    with mount(str(tmp_path / "s3.json"), storage_options=options) as root:
        group = zarr.open_group(root, mode="r", zarr_format=2)
        np.testing.assert_array_equal(group["t2m"][...], _expected(files)[0])


def _read_all(mapper_or_root) -> dict:
    import zarr

    group = zarr.open_group(mapper_or_root, mode="r", zarr_format=2)
    return {name: group[name][...] for name in group.array_keys()}


def test_parquet_output_reads_the_same_through_fsspec_and_the_mount(archive, mount):
    """``-o OUT.parq``: the LazyReferenceMapper layout, record files padded to the record size;
    fsspec's ReferenceFileSystem and a mount read the same values as the JSON output."""
    import fsspec
    import pyarrow.parquet as pq

    directory, files = archive
    assert run_cli("scan", *files, "-o", str(directory / "refs.json")).returncode == 0
    result = run_cli("scan", *files, "-o", str(directory / "refs.parq"), "--record-size", "4")
    assert result.returncode == 0, result.stderr
    meta = json.loads((directory / "refs.parq" / ".zmetadata").read_text())
    assert meta["record_size"] == 4 and meta["metadata"]["t2m/.zarray"]["shape"] == [11, NY, NX]
    records = sorted(p.name for p in (directory / "refs.parq" / "t2m").iterdir())
    assert records == ["refs.0.parq", "refs.1.parq", "refs.2.parq"]  # 11 chunks, 4 a record
    last = pq.read_table(directory / "refs.parq" / "t2m" / "refs.2.parq").to_pydict()
    assert len(last["path"]) == 4 and last["path"][3] is None and last["path"][0] == files[2]  # padded
    expected = _read_all(fsspec.filesystem("reference", fo=str(directory / "refs.json")).get_mapper(""))
    through_fsspec = _read_all(fsspec.filesystem("reference", fo=str(directory / "refs.parq")).get_mapper(""))
    assert expected.keys() == through_fsspec.keys() and "time" in expected
    for name, values in expected.items():
        np.testing.assert_array_equal(through_fsspec[name], values, strict=True)
    with mount(str(directory / "refs.parq")) as root:
        mounted = _read_all(root)
        for name, values in expected.items():
            np.testing.assert_array_equal(mounted[name], values, strict=True)
    (directory / "plain").mkdir()
    refused = run_cli("scan", *files, "-o", str(directory / "plain.parq"))
    assert refused.returncode == 0  # a new directory
    (directory / "other.parq").mkdir()
    (directory / "other.parq" / "keep.txt").write_text("mine")
    refused = run_cli("scan", *files, "-o", str(directory / "other.parq"))
    assert refused.returncode == 1 and "is not a Parquet reference set; not overwritten" in refused.stderr
    assert (directory / "other.parq" / "keep.txt").read_text() == "mine"
    nowhere = run_cli("scan", *files, "-o", str(directory / "no" / "such" / "x.parq"))
    assert nowhere.returncode == 1 and "no such directory" in nowhere.stderr and not (directory / "no").exists()


def test_a_dask_cluster_scan_equals_the_local_one(archive):
    """``--dask SCHEDULER``: the per-file scans run on a real dask.distributed LocalCluster."""
    distributed = pytest.importorskip("distributed")
    directory, files = archive
    assert run_cli("scan", *files, "-o", str(directory / "local.json"), "-j", "1").returncode == 0
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None,
                                  processes=True) as cluster:
        result = run_cli("scan", *files, "-o", str(directory / "dask.json"), "--dask", cluster.scheduler_address)
        assert result.returncode == 0, result.stderr
        bad = run_cli("scan", str(directory / "a_0.nc"), str(directory / "nope.nc"), "-o", str(directory / "x.json"),
                      "--dask", cluster.scheduler_address)
        assert bad.returncode == 1 and "nope.nc: no such file" in bad.stderr and "Traceback" not in bad.stderr
    assert (directory / "dask.json").read_text() == (directory / "local.json").read_text()
    unreachable = run_cli("scan", *files, "-o", str(directory / "y.json"), "--dask", "tcp://127.0.0.1:9", timeout=120)
    assert unreachable.returncode == 1 and "dask scheduler tcp://127.0.0.1:9: cannot connect" in unreachable.stderr


def test_a_script_without_a_main_guard_opens_an_archive_while_it_has_threads(archive, tmp_path):
    # with a thread running, workers are spawned (not forked): they must not run the script again
    directory, files = archive
    script = tmp_path / "script.py"
    script.write_text(
        "import threading, time\n"
        "threading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n"
        "import refmount\n"
        f"engine = refmount.open({str(directory / 'a_*.nc')!r})\n"
        "print('RAN', len(engine.read('t2m/.zarray')) > 0)\n")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                         cwd=str(tmp_path), env={**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["RAN", "True"]  # once: not again in a worker


def test_files_without_an_unlimited_dimension_mount_directly_along_the_one_named(tmp_path, mount):
    import xarray

    import refmount
    from refmount.cli.demo import write_archive

    paths = write_archive(str(tmp_path), files=3, nt=2, ny=4, nx=5)  # h5py: no unlimited dimension
    pattern = str(tmp_path / "t2m_*.nc")
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"), "XDG_STATE_HOME": str(tmp_path / "state")}
    (tmp_path / "mnt").mkdir()
    refused = run_cli(pattern, tmp_path / "mnt", env=env)
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1
    assert "no unlimited dimension (none): name the one to concatenate with --concat-dim" in refused.stderr
    inspected = run_cli("inspect", pattern, "--concat-dim", "time", "--json", env=env)
    assert inspected.returncode == 0, inspected.stderr
    arrays = {a["path"]: a for a in json.loads(inspected.stdout)["arrays"]}
    assert arrays["t2m"]["shape"] == [6, 4, 5] and arrays["t2m"]["refs"]["ranged"] == 6
    expected = np.concatenate([h5py.File(p)["t2m"][...] for p in paths])
    with refmount.open(pattern, concat_dim="time", cache_dir=str(tmp_path / "cache")) as engine:
        assert json.loads(engine.read("t2m/.zarray"))["shape"] == [6, 4, 5]
    with mount(pattern, concat_dim="time", cache_dir=str(tmp_path / "cache")) as root:  # the scan kept above
        ds = xarray.open_zarr(root, consolidated=False)
        assert np.array_equal(ds["t2m"].values, expected)
        hours = np.datetime64("2024-01-01T00:00") + np.arange(6) * np.timedelta64(6, "h")
        assert np.array_equal(ds["time"].values, hours.astype(ds["time"].dtype))


def test_a_scan_kept_by_another_version_of_the_scanner_is_made_again(archive, tmp_path, monkeypatch):
    """A fix to the scanner reaches archives mounted before it: kept scans are named by the
    scanner's number too, so an upgraded refmount scans unchanged files again."""
    import refmount
    import refmount.engine

    directory, files = archive
    cache = tmp_path / "cache"
    for number, count in ((refmount.engine.SCANNER, 1), (refmount.engine.SCANNER, 1), (refmount.engine.SCANNER + 1, 2)):
        monkeypatch.setattr(refmount.engine, "SCANNER", number)
        with refmount.open(str(directory / "a_*.nc"), cache_dir=str(cache)) as engine:
            assert engine.read("t2m/.zarray")
        assert len(list((cache / "indexes").iterdir())) == count

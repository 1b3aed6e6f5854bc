"""Command line: ``refmount [OPTIONS] SOURCE [SOURCE...] MOUNTPOINT`` and subcommands."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys

from refmount import __version__
from refmount.cli import config
from refmount.errors import FetchError, RefmountError
from refmount.options import (
    OPTIONS,
    MountOptions,
    _prefixes,
    default_log_file,
    parse_relocation,
    parse_storage_options,
    split_name,
    split_sources,
)
from refmount.urls import location_of
from refmount.views import VIEWS

USAGE = """refmount [OPTIONS] SOURCE [SOURCE...] MOUNTPOINT
       refmount --config FILE [OPTIONS] [[SOURCE...] MOUNTPOINT]
       refmount COMMAND [ARGS]   (check, inspect, scan, stats, umount, demo; COMMAND --help for each)"""

# (command, one-line summary) for the top-level help
COMMANDS = (
    ("(none)", "mount: serve reference sets or Icechunk repositories at MOUNTPOINT (in the background; -f to stay attached)"),
    ("check", "validate a config file or command line and its sources without mounting"),
    ("inspect", "summarise a reference set or repository without mounting: arrays, chunks, origins, missing files"),
    ("scan", "make a reference set from netCDF3/NetCDF4/HDF5 files, combined along their record dimension"),
    ("stats", "counters of a running mount (--json for scripts)"),
    ("umount", "unmount (lazily when busy or when its daemon died)"),
    ("demo", "make a small NetCDF4 archive, mount it over loopback HTTP, read it with xarray"),
)

SOURCES = ("SOURCE is a kerchunk reference set (JSON v0/v1, optionally .gz/.zst, or a Parquet directory) or an "
           "Icechunk repository (a path or URL, optionally REPO|icechunk:@branch.NAME/path or @tag.NAME, "
           "@SNAPSHOTID), local or remote (s3://, http(s)://, anything fsspec reads); NAME=SOURCE names it. "
           "One source is the mount's root; several appear as sub-directories named after them. Options given "
           "here override the config file's.")


def _epilog() -> str:
    width = max(len(name) for name, _ in COMMANDS)
    lines = [SOURCES, "", "commands:"]
    lines += [f"  {name:<{width}}  {summary}" for name, summary in COMMANDS]
    return "\n".join(lines)


def _mount_parser(prog: str = "refmount", usage: str = USAGE, description: str | None = None,
                  epilog: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        usage=usage,
        description=description or "Mount kerchunk reference sets and Icechunk repositories as a read-only "
        "directory tree (a Zarr store) that every program can read.",
        epilog=_epilog() if epilog is None else epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"refmount {__version__}")
    p.add_argument("paths", nargs="*", metavar="SOURCE... MOUNTPOINT")
    p.add_argument("-c", "--config", help="TOML config file (sources, mountpoint, any option below)")
    p.add_argument("-f", "--foreground", action="store_true", help="stay attached (systemd, debugging)")
    _add_options(p)
    p.add_argument("-v", "--verbose", action="count", default=0, help="debug logging")
    p.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)
    p.add_argument("--parent-fd", type=int, help=argparse.SUPPRESS)  # unmount when this pipe closes
    p.add_argument("--options-json", help=argparse.SUPPRESS)  # the Python API's options, whole
    return p


_SHORT = {"storage_options": "-o"}


def _add_options(p: argparse.ArgumentParser) -> None:
    """Every option of the table with a command-line form, as ``--NAME`` (``--no-NAME``)."""
    for name, f in OPTIONS.items():
        meta = f.metadata
        if not meta["cli"]:
            continue
        flag = "--" + name.replace("_", "-")
        kind, extra = meta["kind"], {"metavar": meta["metavar"]} if meta["metavar"] else {}
        names = [flag] + ([_SHORT[name]] if name in _SHORT else [])
        if kind == "flag":
            p.add_argument(*names, dest=name, action="store_const", const=True, help=meta["help"])
        elif kind == "no-flag":
            p.add_argument("--no-" + name.replace("_", "-"), dest=name, action="store_const", const=False, help=meta["help"])
        elif kind in ("list", "storage"):
            p.add_argument(*names, dest=name, action="append", help=meta["help"], **extra)
        elif name == "view":
            p.add_argument(*names, dest=name, choices=VIEWS, help=meta["help"])
        else:
            p.add_argument(*names, dest=name, help=meta["help"], **extra)


def _options(args: argparse.Namespace, problems: list[str] | None = None) -> MountOptions:
    """Defaults, then the config file, then the command line. With ``problems``, config
    problems are collected there instead of raised (``refmount check``)."""
    values: dict = {}
    if args.config:
        values, found = config.load(args.config)
        if found and problems is None:
            raise RefmountError("; ".join(found))
        if problems is not None:
            problems.extend(found)
    for name, f in OPTIONS.items():
        value = getattr(args, name, None)
        if not f.metadata["cli"] or value is None:
            continue
        kind = f.metadata["kind"]
        if kind == "storage":
            merged = {p: dict(v) for p, v in values.get("storage_options", {}).items()}
            for protocol, options in parse_storage_options(value).items():
                merged.setdefault(protocol, {}).update(options)
            values[name] = merged
        elif kind == "list":  # each checked as a config value is (an empty prefix would allow all)
            try:
                value = f.metadata["convert"](value)
            except RefmountError as exc:
                raise RefmountError(f"--{name.replace('_', '-')}: {exc}") from None
            values[name] = values.get(name, []) + value
        else:
            try:
                value = f.metadata["convert"](value)
            except RefmountError as exc:
                raise RefmountError(f"--{name.replace('_', '-')}: {exc}") from None
            values[name] = os.path.abspath(value) if kind == "path" and value != "auto" else value
    if args.view:
        values["views"] = {}  # the command line's view is every source's
    if args.verbose and not args.log_level:
        values["log_level"] = "DEBUG"
    if len(args.paths) == 1 and args.config:
        values["mountpoint"] = os.path.abspath(args.paths[0])
    elif len(args.paths) >= 2:
        *sources, mountpoint = args.paths
        values["mountpoint"] = os.path.abspath(mountpoint)  # libfuse moves the daemon to /
        values["sources"] = [(name, location_of(src)) for name, src in split_sources(sources)]
    elif args.paths or not args.config:
        raise RefmountError("need at least one SOURCE and a MOUNTPOINT")
    where = f"config {args.config}" if args.config else "command line"
    if not values.get("sources"):
        raise RefmountError(f"{where}: no sources given")
    if not values.get("mountpoint"):
        raise RefmountError(f"{where}: no mountpoint given")
    # relocations checked here, not in the daemon, and a NEW directory made absolute (the daemon runs in /)
    values["relocate"] = ["=".join(parse_relocation(item)) for item in values.get("relocate", [])]
    return MountOptions(**values)


def child_args(args: argparse.Namespace) -> list[str]:
    """The daemon's command line: what was given, with paths made absolute (its cwd is ``/``)."""
    out: list[str] = []
    for action in _mount_parser()._actions:
        name = action.dest
        value = getattr(args, name, None)
        if name in ("paths", "help", "foreground", "ready_fd", "parent_fd", "options_json") or value in (None, []):
            continue
        if name == "verbose" and not value:
            continue
        flag = action.option_strings[-1]
        if name in ("config", "log_file") or (name == "cache_dir" and value != "auto"):
            value = os.path.abspath(value)
        if name == "relocate":  # a NEW directory: absolute, the daemon's cwd is /
            value = ["=".join(parse_relocation(item)) for item in value]
        if name in ("allow_origin", "authorize_virtual"):  # made absolute as the option itself does
            value = _prefixes(value)
        if isinstance(value, list):
            for item in value:
                out += [flag, item]
        elif action.const is not None:  # store_const flags
            out.append(flag)
        elif name == "verbose":
            out += [flag] * value
        else:
            out += [flag, str(value)]
    paths = list(args.paths)
    if paths:
        paths[-1] = os.path.abspath(paths[-1])
        for i, arg in enumerate(paths[:-1]):
            name, source = split_name(arg)
            paths[i] = f"{name}={location_of(source)}" if name else location_of(source)
    return [*out, "--", *paths]


def to_args(opts: MountOptions) -> list[str]:
    """The daemon's arguments for options built in Python: every field, exactly, as JSON, with
    local paths made absolute (the daemon runs in ``/``)."""
    opts.mountpoint = os.path.abspath(opts.mountpoint)
    opts.sources = [(name, location_of(src)) for name, src in opts.sources]
    opts.relocate = ["=".join(parse_relocation(item)) for item in opts.relocate]
    opts.log_file = os.path.abspath(opts.log_file or default_log_file(opts.mountpoint))
    if opts.cache_dir and opts.cache_dir != "auto":
        opts.cache_dir = os.path.abspath(opts.cache_dir)
    return ["--options-json", opts.to_json()]


def cmd_mount(argv: list[str]) -> int:
    parser = _mount_parser()
    args = parser.parse_intermixed_args(argv)
    opts = MountOptions.from_json(args.options_json) if args.options_json else _options(args)
    if args.foreground:
        from refmount.mount.daemon import serve

        if args.ready_fd is not None and opts.log_file is None:
            opts.log_file = default_log_file(opts.mountpoint)

        again = child_args(args)  # with absolute paths: libfuse moves the daemon to /

        def reload() -> MountOptions:
            if args.options_json:  # the Python API's mount: the same options, sources read again
                return MountOptions.from_json(args.options_json)
            new = _options(parser.parse_intermixed_args(again))
            new.log_file = opts.log_file
            return new

        return serve(opts, args.ready_fd, reload, args.parent_fd)
    from refmount.mount.daemon import spawn

    args.log_file = opts.log_file or default_log_file(opts.mountpoint)
    proc = spawn(child_args(args))
    for warning in proc.warnings:
        print(f"refmount: warning: {warning}", file=sys.stderr)
    names = ", ".join(src for _, src in opts.sources)
    print(f"refmount: serving {names} at {opts.mountpoint} (log: {args.log_file}; stop with: refmount umount "
          f"{shlex.quote(opts.mountpoint)})")
    return 0


def cmd_umount(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="refmount umount", description="Unmount a refmount mount (lazily if busy or dead).")
    p.add_argument("mountpoint")
    args = p.parse_args(argv)
    from refmount.mount.mountpoint import unmount

    print(f"{args.mountpoint}: {unmount(args.mountpoint)}")
    return 0


def _file_timeout(seconds: float | None) -> float:
    """``--file-timeout`` of ``scan`` and ``inspect`` (a mount's is a mount option)."""
    from refmount.scan import FILE_TIMEOUT

    if seconds is not None and not seconds > 0:
        raise RefmountError(f"--file-timeout {seconds:g}: must be more than 0 seconds")
    return FILE_TIMEOUT if seconds is None else seconds


def cmd_inspect(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="refmount inspect", description="Summarise a reference set without mounting it.")
    p.add_argument("source")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--storage-option", "-o", action="append", default=[], metavar="PROTOCOL.KEY=VALUE")
    p.add_argument("--all-refs", action="store_true", help="Icechunk: every branch, tag and snapshot")
    p.add_argument("--authorize-virtual", action="append", default=[], metavar="PREFIX", help="Icechunk: as for mounting")
    p.add_argument("--relocate", action="append", default=[], metavar="OLD=NEW", help="Icechunk: as for mounting")
    p.add_argument("--probe", action="store_true", help="also ask every remote original for its size")
    p.add_argument("--concat-dim", metavar="NAME", help="archives: as for mounting")
    p.add_argument("--file-timeout", type=float, default=None, metavar="SECONDS", help="archives: as for mounting")
    args = p.parse_args(argv)
    import logging

    from refmount.cli.summary import render, summarize
    from refmount.io.origins import Origins, unreadable_local
    from refmount.scan import is_archive, scan
    from refmount.sources import kerchunk_json, open_source

    logging.getLogger("refmount.icechunk").setLevel(logging.ERROR)  # the summary lists unauthorised containers
    origins = Origins(parse_storage_options(args.storage_option))
    if is_archive(args.source):  # original files: what a mount of them would serve (scanned now)
        refs, _ = scan([args.source], jobs=min(4, os.cpu_count() or 1), concat_dim=args.concat_dim,
                       storage_options=origins.storage_options, file_timeout=_file_timeout(args.file_timeout))
        tree = kerchunk_json.from_refs(refs, args.source)
    else:
        tree = open_source(location_of(args.source), origins, tuple(args.authorize_virtual),
                           tuple(parse_relocation(r) for r in args.relocate), args.all_refs)
    summary = summarize(tree)
    urls = [url for url in tree.urls() if not url.endswith("/")]
    unreadable = unreadable_local(urls)
    if args.probe:
        unreadable.update(origins.unreachable(urls))
    summary["unreadable_originals"] = unreadable
    print(json.dumps(summary, indent=2) if args.json else render(summary, args.source))
    return 0


def cmd_scan(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="refmount scan", description="Make a kerchunk reference set (JSON v1 or Parquet) "
                                "from netCDF3, NetCDF4 and HDF5 files; several files are concatenated along their record "
                                "(unlimited) dimension, its coordinate re-encoded in the first file's CF units.")
    p.add_argument("files", nargs="+", metavar="FILE_OR_GLOB", help="paths, globs ('/archive/*.nc'), directories or URLs")
    p.add_argument("-o", "--output", required=True, help="what to write: OUT.json, OUT.json.zst (compressed as "
                   "named: also .gz, .bz2, .xz) or OUT.parq (a Parquet reference directory, for very many files or chunks)")
    p.add_argument("--concat-dim", metavar="NAME", help="the dimension to concatenate along (default: the unlimited one)")
    p.add_argument("-j", "--jobs", type=int, default=min(4, os.cpu_count() or 1), help="files scanned at once")
    p.add_argument("--dask", metavar="SCHEDULER", help="scan on this dask.distributed cluster (tcp://host:8786) "
                   "instead of local processes")
    p.add_argument("--file-timeout", type=float, default=None, metavar="SECONDS",
                   help="give up a file whose scan reads nothing for this long: a damaged HDF5 file can make the "
                   "HDF5 library loop forever (default 300)")
    p.add_argument("--record-size", type=int, default=None, metavar="N",
                   help="chunks per Parquet record file (default 10000)")
    p.add_argument("--storage-options", "--storage-option", dest="storage_option", action="append", default=[],
                   metavar="PROTOCOL.KEY=VALUE", help="fsspec option for remote originals, as for mounting "
                   "(-o is the output here), e.g. s3.endpoint_url=http://127.0.0.1:9000 (repeatable)")
    args = p.parse_args(argv)
    import logging

    from refmount.scan import scan_combined, write

    logging.basicConfig(format="refmount: warning: %(message)s", level=logging.WARNING, stream=sys.stderr)
    if args.record_size is not None and args.record_size < 1:
        raise RefmountError(f"--record-size {args.record_size}: must be at least 1")
    if args.record_size is not None and not args.output.rstrip("/").endswith((".parq", ".parquet")):
        raise RefmountError(f"--record-size is for Parquet output (OUT.parq), not {args.output}")
    parent = os.path.dirname(os.path.abspath(args.output.rstrip("/")))
    if not os.path.isdir(parent):  # said before the scan, not after it
        raise RefmountError(f"{args.output}: no such directory {parent}")
    if os.path.isdir(args.output) and not args.output.rstrip("/").endswith((".parq", ".parquet")):
        raise RefmountError(f"{args.output}: is a directory (the output is a reference file)")
    combined, summary = scan_combined(args.files, jobs=max(args.jobs, 1), concat_dim=args.concat_dim,
                                      storage_options=parse_storage_options(args.storage_option), dask=args.dask,
                                      file_timeout=_file_timeout(args.file_timeout))
    write(combined, args.output, args.record_size)
    left = f", {summary['left_out']} variable(s) or group(s) left out (see warnings)" if summary["left_out"] else ""
    print(f"refmount: scanned {summary['files']} file(s) in {summary['seconds']} s: {summary['arrays']} arrays, "
          f"{summary['chunks']} chunks, {summary['referenced_bytes']:,} bytes referenced{left} -> {args.output}")
    return 0


def cmd_demo(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="refmount demo", description="Mount a generated NetCDF4 archive over loopback HTTP and read it with xarray.")
    p.add_argument("--keep", metavar="DIR", help="build the demo in DIR and keep it")
    args = p.parse_args(argv)
    try:
        import h5py  # noqa: F401
        import kerchunk  # noqa: F401
        import xarray  # noqa: F401
    except ImportError as exc:
        raise RefmountError(f"the demo needs {exc.name}: pip install 'refmount[demo]'") from None
    from refmount.cli.demo import run

    return run(args.keep)


def cmd_check(argv: list[str]) -> int:
    """Validate a config (and command line) without mounting; list every problem."""
    parser = _mount_parser("refmount check", "refmount check [--config FILE] [OPTIONS] [SOURCE... MOUNTPOINT]",
                           "Validate a config file (and any command-line options) without mounting: every "
                           "problem is listed, including local originals that are missing or unreadable "
                           "(--probe also asks remote ones). Exit status 1 when there is any.", SOURCES)
    parser.add_argument("--probe", action="store_true", help="also ask every remote original for its size")
    args = parser.parse_intermixed_args(argv)
    problems: list[str] = []
    try:
        opts = _options(args, problems)
    except RefmountError as exc:
        problems.append(str(exc))
        opts = None
    if opts is not None:
        problems += _check_mount(opts, args.probe)
    for problem in problems:
        print(f"refmount: {problem}", file=sys.stderr)
    if any(not problem.startswith("warning: ") for problem in problems):
        return 1
    print(f"ok: {len(opts.sources)} source(s), mountpoint {opts.mountpoint}")
    return 0


def _check_mount(opts: MountOptions, probe: bool = False) -> list[str]:
    from refmount.io.origins import Origins, unreadable_local
    from refmount.io.policy import OriginPolicy, is_shared
    from refmount.mount.mountpoint import is_empty, is_mounted
    from refmount.scan import expand, is_archive
    from refmount.sources import open_source

    problems = []
    if not os.path.isdir(opts.mountpoint):
        problems.append(f"mountpoint {opts.mountpoint}: not a directory")
    elif not opts.allow_non_empty and not is_mounted(opts.mountpoint) and not is_empty(opts.mountpoint):
        problems.append(f"mountpoint {opts.mountpoint}: not empty (--allow-non-empty to mount anyway)")
    policy = OriginPolicy(opts.allow_origin, shared=is_shared(bool(opts.allow_other)))
    origins = Origins(opts.storage_options, timeout=opts.timeout, retries=opts.retries, policy=policy)
    for name, source in opts.sources:
        if is_archive(source):  # original files, scanned at mount: that they exist is what check can say
            try:
                expand([source], opts.storage_options)
            except RefmountError as exc:
                problems.append(f"source {name}: {exc}")
            continue
        try:
            tree = open_source(source, origins, **opts.source_settings())
        except (RefmountError, FetchError) as exc:
            problems.append(f"source {name}: {exc}")
            continue
        policy.trust(tree.own_urls())
        urls = list(tree.urls())
        refused = {url: policy.problem(url) for url in urls} if policy.active else {}
        problems += [f"source {name}: origin {url}: {why}" for url, why in refused.items() if why]
        readable = [url for url in urls if not refused.get(url)]
        missing = unreadable_local(readable)
        if missing:  # with --allow-missing, warnings (the mount starts)
            advice = "mounted anyway (--allow-missing)" if opts.allow_missing else "the mount refuses to start (--allow-missing mounts anyway)"
            tag = "warning: " if opts.allow_missing else ""
            problems.append(f"{tag}source {name}: {len(missing)} local original(s) missing or unreadable; {advice}")
            problems += [f"{tag}source {name}: original {url}: {why}" for url, why in missing.items()]
        if probe:
            unreachable = origins.unreachable(readable)
            if unreachable:
                problems.append(f"source {name}: {len(unreachable)} remote original(s) did not answer")
                problems += [f"source {name}: {why}" for why in unreachable.values()]
    if opts.cache_dir and opts.cache_dir != "auto":
        parent = opts.cache_dir
        while not os.path.exists(parent):
            parent = os.path.dirname(parent)
        if not os.access(parent, os.W_OK | os.X_OK):
            problems.append(f"cache directory {opts.cache_dir}: not writable")
    return problems


def cmd_stats(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="refmount stats", description="Counters of a running mount.")
    p.add_argument("mountpoint")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    args = p.parse_args(argv)
    from refmount.cli.summary import render_stats
    from refmount.mount.mountpoint import filesystem_type, is_dead, is_mounted

    if not is_mounted(args.mountpoint) or filesystem_type(args.mountpoint) != "fuse.refmount":
        raise RefmountError(f"{args.mountpoint}: not a refmount mount")
    if is_dead(args.mountpoint):
        raise RefmountError(f"{args.mountpoint}: its daemon is gone (it was killed or crashed); clear the mount "
                            f"with: refmount umount {shlex.quote(args.mountpoint)}; then mount again")
    try:
        data = json.loads(os.getxattr(args.mountpoint, "user.refmount.stats"))
    except OSError as exc:
        raise RefmountError(f"{args.mountpoint}: cannot read its counters: {exc.strerror}") from None
    print(json.dumps(data, indent=2, sort_keys=True) if args.json else render_stats(data))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    commands = {"umount": cmd_umount, "inspect": cmd_inspect, "demo": cmd_demo, "check": cmd_check, "stats": cmd_stats,
                "scan": cmd_scan}
    if not argv:
        print(f"usage: {USAGE}\n\n{_epilog()}\n\nrefmount --help lists the mount options.", file=sys.stderr)
        return 2
    try:
        if argv and argv[0] in commands:
            return commands[argv[0]](argv[1:])
        return cmd_mount(argv)
    except (RefmountError, FetchError) as exc:  # FetchError: an object missing under inspect
        print(f"refmount: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

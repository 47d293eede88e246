"""The argument parser of `meigen-async` and its commands, with their help texts.

A little over 450 lines on purpose: most of it is help text (each command's examples), and
`build_parser` is one table of every command's options, read top to bottom as `--help` shows
them; the options shared by several commands are added by the small helpers above it. Split by
command, the pieces would each import the same helpers and say less read alone.
"""

from __future__ import annotations

import argparse
from typing import NoReturn

from .._quota import API_KEY_ENV
from .._version import __version__
from ..export import DEFAULT_SHARD_SIZE, FORMATS, MAX_SHARD_SIZE
from ..session import DEFAULT_BASE_URL
from ._bulk import (
    _bulk,
)
from ._cache import _cache_clear, _cache_info, _cache_path
from ._demo import _demo
from ._download import _download
from ._export import _export
from ._get import (
    _get,
)
from ._help import HelpFormatter
from ._options import (
    _MAX_RETRIES,
    BASE_URL_ENV,
    _base_url,
    _int_at_least,
    _positive_float,
)
from ._output import (
    _EXIT_USAGE,
    _PROG,
    _error,
)
from ._search import _search
from ._serve import _serve


class _Parser(argparse.ArgumentParser):
    """An argument parser that reports a bad argument in one line, as every other error is."""

    def error(self, message: str) -> NoReturn:
        """Print one `meigen-async: error: ...` line and exit with status 2."""
        _error(f"{message} (see '{self.prog} --help')")
        self.exit(_EXIT_USAGE)


_DESCRIPTION = """\
Fetch images from MeiGen's public gallery (GET /api/images/:id), in bulk or one by one,
or serve a local fake gallery to test against."""

_EXAMPLES = """\
examples (offline, against the bundled sample gallery):
  meigen-async serve --port 8080 &
  export MEIGEN_BASE_URL=http://127.0.0.1:8080
  meigen-async get 2013572250852104677
  meigen-async get --json 2013572250852104677 2014980103401885690
  meigen-async serve --list > ids.txt
  meigen-async bulk ids.txt -o images.jsonl
  meigen-async search "neon city" --ids | meigen-async bulk - -o neon.jsonl
  meigen-async demo

Without --base-url or $MEIGEN_BASE_URL, get and bulk ask the real service.

Run 'meigen-async COMMAND --help' for a command's options."""

_GET_EXAMPLES = """\
examples (start 'meigen-async serve --port 8080' first to try them offline):
  meigen-async get --base-url http://127.0.0.1:8080 2013572250852104677
  meigen-async get --base-url http://127.0.0.1:8080 --json 2014980103401885690
  meigen-async get 2009629483448627597    # the real service

exit status: 0 when every image was fetched, 1 when one failed, 2 for bad input."""

_BULK_EXAMPLES = """\
examples (start 'meigen-async serve --port 8080' first to try them offline):
  meigen-async serve --list > ids.txt
  meigen-async bulk --base-url http://127.0.0.1:8080 ids.txt -o images.jsonl
  cut -f1 export.tsv | meigen-async bulk - --rate-limit 20 > images.jsonl

The ids are read as a stream, one id per line (blank lines skipped), so a file of millions of ids
runs in flat memory. Each image is written as one JSON line as soon as it arrives, in
completion order. With --media, an image whose media files did not all download is not
written: it failed. Failed ids are reported on stderr at the end (grouped by kind when there
are many), and written to --failed as they fail. --resume skips the ids already in OUT and
appends, so an interrupted job (Ctrl-C, SIGTERM, a kill) carries on where it stopped. When
the gallery cannot be reached for 20 ids in a row (2 x --concurrency when more), bulk stops
at once.

exit status: 0 when every id was fetched (and its media, with --media), 1 when one failed,
2 for bad input, 130 when interrupted."""

_SEARCH_EXAMPLES = """\
examples:
  meigen-async search "cherry blossom"
  meigen-async search                    # no query: browse the newest posts
  meigen-async search "neon city" --json --max 50 > hits.jsonl
  meigen-async search "neon city" --ids --max 500 | meigen-async bulk - -o neon.jsonl
  MEIGEN_API_KEY=meigen_sk_... meigen-async search "neon city" --max 1000

Pages through GET /api/search by offset, each id once, until the results end or --max.
Without an API key the service limits searches per address (429, about a minute); with one
($MEIGEN_API_KEY, or --api-key) the key's daily quota applies, until 00:00 UTC once spent.
The key is sent with searches only.

exit status: 0 when the search ran, 1 when it failed, 2 for bad input."""

_SERVE_EXAMPLES = """\
examples:
  meigen-async serve
  meigen-async serve --port 8080 --data my-gallery.jsonl
  meigen-async serve --list

Prints the URL to stdout, then serves GET /api/images/:id and the search on 127.0.0.1 until
Ctrl-C. The bundled sample serves its images' media files too, from the same address: its
stderr names the --media-host that download and bulk --media need. --data takes a JSON Lines
file, one endpoint 'data' object (with an 'id') per line; its media URLs are served as given.

exit status: 0 when stopped by SIGINT (Ctrl-C) or SIGTERM, also when started with SIGINT
ignored; 2 for bad input."""

_DEMO_EXAMPLES = """\
example:
  meigen-async demo

Starts the bundled sample gallery on 127.0.0.1, fetches it the way a busy bot would
(duplicates, a missing id, a burst of calls for one popular image, a second pass from the
cache), downloads a few of its pictures (from the sample's own address, into a temporary
directory) and shows what the session did. Sends nothing beyond 127.0.0.1."""


def _add_api_key(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--api-key",
        metavar="KEY",
        default=None,  # None: the session reads $MEIGEN_API_KEY
        help=f"a MeiGen API key (meigen_sk_...) sent with search requests only, so that its "
        f"daily quota applies rather than the per-address limit (default: ${API_KEY_ENV}; "
        "prefer the variable: a command line is visible to other users)",
    )


def _add_media_host(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--media-host",
        dest="media_hosts",
        action="append",
        metavar="HOST[:PORT]",
        help="a host media may be downloaded from, on its scheme's default port unless "
        "PORT is given; repeatable, replaces the defaults (images.meigen.ai, pbs.twimg.com)",
    )


def _add_pacing(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--concurrency",
        type=_int_at_least(1),
        default=16,
        metavar="N",
        help="most requests in flight at once (default: 16)",
    )
    command.add_argument(
        "--rate-limit",
        type=_positive_float,
        default=None,
        metavar="R",
        help="most requests per second (default: no limit)",
    )


_DOWNLOAD_EXAMPLES = """\
examples:
  meigen-async download 2009629483448627597 -o media/
  meigen-async download -i ids.txt -o media/
  meigen-async search "neon city" --ids | meigen-async download -

Prints one line per file (path, bytes, type, and 'downloaded' or 'already there'), then a
summary on stderr. A file already complete (each carries a record of its URL, size and
SHA-256) is not downloaded again. Only http(s) URLs on the media hosts are requested. On a
terminal, a progress bar counts the images.

exit status: 0 when every file was downloaded, 1 when one failed, 2 for bad input, 130
when interrupted."""


_CACHE_EXAMPLES = """\
examples:
  meigen-async cache info
  meigen-async cache path
  meigen-async cache clear --cache /tmp/gallery.sqlite

get, bulk and download keep the images they fetch (and the ids the gallery does not
have) in this SQLite file, so that asking again makes no request until they expire. 'clear'
deletes every entry of a file of ours (never another program's database) and gives the space
back; the next run starts afresh.

exit status: 0 when done, 1 when the file cannot be read or cleared, 2 for bad input."""


def _add_cache(commands: argparse._SubParsersAction[_Parser]) -> None:
    cache = commands.add_parser(
        "cache",
        help="show where the cache is and what it holds, or clear it",
        description="The SQLite cache of get, bulk and download.",
        epilog=_CACHE_EXAMPLES,
        formatter_class=HelpFormatter,
    )
    actions = cache.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, run, summary in (
        ("path", _cache_path, "print where the cache file is"),
        ("info", _cache_info, "show the cache's entries, its size, and when they were stored"),
        ("clear", _cache_clear, "delete every entry of the cache and give the space back"),
    ):
        action = actions.add_parser(
            name,
            help=summary,
            description=summary[0].upper() + summary[1:] + ".",
            formatter_class=HelpFormatter,
        )
        _add_cache_file(action)
        action.set_defaults(run=run)


def _add_cache_file(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--cache",
        metavar="PATH",
        default=None,
        help="the SQLite cache file (default: $XDG_CACHE_HOME/meigen-async/gallery.sqlite, "
        "else ~/.cache/meigen-async/gallery.sqlite)",
    )


_EXPORT_EXAMPLES = (
    "examples (start 'meigen-async serve --port 8080' first to try them offline):\n"
    '  meigen-async export neon/ --query "neon city" --format webdataset '
    "--base-url http://127.0.0.1:8080 --media-host 127.0.0.1:8080\n"
    "  meigen-async serve --list > ids.txt\n"
    "  meigen-async export gallery/ ids.txt --format imagefolder --media media/ "
    "--base-url http://127.0.0.1:8080 --media-host 127.0.0.1:8080\n"
    "  meigen-async export data/ ids.txt --format parquet    # the real service\n"
    """
The bundled sample serves its pictures from its own address, which --media-host allows (serve
names it on stderr).

One sample per picture, keyed {id}_{index}, with its prompt and metadata. Every shard has a
status table ({shard}_status.parquet: a row for every input sample, failures included) and
{shard}_stats.json; OUT gets a dataset card (README.md). Pictures whose host sends
X-Robots-Tag: noai or noimageai are not written, unless --ignore-opt-out (for pictures you
have the rights to; the card says it was used). --resume keeps the shards done and makes the
rest; shards appear whole, by rename, so a kill at any moment leaves only whole shards.
Pictures already in --media DIR (from download or bulk --media) are not downloaded again.

exit status: 0 when every sample was written (or opted out), 1 when one failed or the export
stopped, 2 for bad input, 130 when interrupted."""
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `meigen-async` and its commands."""
    formatter = HelpFormatter
    parser = _Parser(
        prog=_PROG, description=_DESCRIPTION, epilog=_EXAMPLES, formatter_class=formatter
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")

    remote = _Parser(add_help=False)
    remote.add_argument(
        "--base-url",
        type=_base_url,
        default=None,  # resolved in main(), so that a bad $MEIGEN_BASE_URL is named as such
        metavar="URL",
        help=f"the gallery to ask (default: ${BASE_URL_ENV}, else {DEFAULT_BASE_URL})",
    )
    remote.add_argument(
        "--timeout",
        type=_positive_float,
        default=10.0,
        metavar="SECONDS",
        help="time allowed for one request (default: 10)",
    )
    remote.add_argument(
        "--retries",
        type=_int_at_least(0, _MAX_RETRIES),
        default=3,
        metavar="N",
        help="retries of a request that failed in a retryable way (default: 3)",
    )
    _add_cache_file(remote)
    remote.add_argument(
        "--no-cache",
        action="store_true",
        help="keep nothing between runs: no SQLite cache",
    )

    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    get = commands.add_parser(
        "get",
        parents=[remote],
        help="show one or more images",
        description="Show gallery images: a summary each, or their JSON.",
        epilog=_GET_EXAMPLES,
        formatter_class=formatter,
    )
    get.add_argument("ids", nargs="+", metavar="ID", help="a gallery image id")
    get.add_argument(
        "--json",
        action="store_true",
        help="print each image as one line of JSON (JSON Lines, as bulk writes)",
    )
    get.set_defaults(run=_get)

    bulk = commands.add_parser(
        "bulk",
        parents=[remote],
        help="fetch many ids from a file or stdin into JSON Lines",
        description="Fetch every id of FILE (or stdin) and write the images as JSON Lines.",
        epilog=_BULK_EXAMPLES,
        formatter_class=formatter,
    )
    bulk.add_argument(
        "file", metavar="FILE", help="a file of ids, one id per line; '-' reads stdin"
    )
    bulk.add_argument("-o", "--output", metavar="OUT", help="write here instead of stdout")
    _add_pacing(bulk)
    bulk.add_argument(
        "--resume",
        action="store_true",
        help="skip the ids already in OUT (a trailing partial line is dropped) and append",
    )
    bulk.add_argument(
        "--failed",
        metavar="FAILED.txt",
        help="write the ids that failed or were not attempted here, one id per line",
    )
    bulk.add_argument(
        "--media",
        metavar="DIR",
        help="also download each image's media files into DIR/{id}/{index}{ext}",
    )
    _add_media_host(bulk)
    bulk.set_defaults(run=_bulk)

    download = commands.add_parser(
        "download",
        parents=[remote],
        help="download the media files of images, named or from a file or stdin",
        description="Download the media files of each image into DIR/{id}/{index}{ext}.",
        epilog=_DOWNLOAD_EXAMPLES,
        formatter_class=formatter,
    )
    download.add_argument(
        "ids", nargs="*", metavar="ID", help="a gallery image id; '-' reads ids from stdin"
    )
    download.add_argument(
        "-i", "--input", metavar="FILE", help="read ids from FILE, one id per line; '-': stdin"
    )
    download.add_argument(
        "-o", "--output", metavar="DIR", default="media", help="where to write (default: media)"
    )
    _add_media_host(download)
    download.set_defaults(run=_download)

    export = commands.add_parser(
        "export",
        parents=[remote],
        help="export pictures with their prompts as a dataset (imagefolder, webdataset, parquet)",
        description="Export gallery pictures with their prompts into OUT as a dataset that "
        "Hugging Face datasets, webdataset and pyarrow read.",
        epilog=_EXPORT_EXAMPLES,
        formatter_class=formatter,
    )
    export.add_argument("output", metavar="OUT", help="the dataset's directory")
    export.add_argument(
        "file", metavar="IDS_FILE", nargs="?", help="ids, one per line; '-' reads stdin"
    )
    which = export.add_mutually_exclusive_group()
    which.add_argument("--query", metavar="Q", help="export the posts a gallery search finds")
    which.add_argument("--all", action="store_true", help="export every post of the gallery")
    export.add_argument(
        "--format", required=True, choices=FORMATS, help="the dataset's layout (required)"
    )
    export.add_argument(
        "--shard-size",
        type=_int_at_least(1, MAX_SHARD_SIZE),
        default=DEFAULT_SHARD_SIZE,
        metavar="N",
        help=f"most samples a shard, 1 to {MAX_SHARD_SIZE:,} (default: {DEFAULT_SHARD_SIZE:,})",
    )
    export.add_argument(
        "--resume", action="store_true", help="keep the shards done in OUT and make the rest"
    )
    export.add_argument(
        "--media",
        metavar="DIR",
        help="download pictures into DIR/{id}/{index}{ext} and keep them there, reusing "
        "those already downloaded (default: OUT/.media, emptied as shards are done)",
    )
    export.add_argument(
        "--ignore-opt-out",
        action="store_true",
        help="write pictures whose host says X-Robots-Tag: noai (only for pictures you have "
        "the rights to; the dataset card records it)",
    )
    _add_pacing(export)
    _add_media_host(export)
    # No --api-key: the command line is kept in the dataset card and the resume command, and a
    # key must not be; --query and --all search with $MEIGEN_API_KEY when it is set.
    export.set_defaults(run=_export, api_key=None)

    search = commands.add_parser(
        "search",
        parents=[remote],
        help="find gallery ids by words of their prompts or authors",
        description="Search the gallery (GET /api/search) and list the hits.",
        epilog=_SEARCH_EXAMPLES,
        formatter_class=formatter,
    )
    search.add_argument(
        "query",
        metavar="QUERY",
        nargs="?",
        default="",
        help="the words to search for; none (or only spaces) lists the newest posts",
    )
    search.add_argument(
        "--limit",
        type=_int_at_least(1, 20),
        default=20,
        metavar="N",
        help="results per page, 1 to 20 (default: 20)",
    )
    search.add_argument(
        "--max",
        type=_int_at_least(1),
        default=100,
        metavar="M",
        help="the most hits to list (default: 100)",
    )
    shown = search.add_mutually_exclusive_group()
    shown.add_argument("--json", action="store_true", help="one JSON object per hit (JSON Lines)")
    shown.add_argument("--ids", action="store_true", help="one id per line, for 'bulk -'")
    _add_api_key(search)
    search.set_defaults(run=_search)

    serve = commands.add_parser(
        "serve",
        help="serve a fake gallery on 127.0.0.1 for testing",
        description="Serve a FakeGallery on 127.0.0.1 until interrupted.",
        epilog=_SERVE_EXAMPLES,
        formatter_class=formatter,
    )
    serve.add_argument(
        "--port",
        type=_int_at_least(0, 65535),
        default=0,
        metavar="P",
        help="the port to listen on (default: 0, a free one)",
    )
    serve.add_argument(
        "--data", metavar="FILE.jsonl", help="serve these images (default: the bundled sample)"
    )
    serve.add_argument(
        "--list",
        action="store_true",
        help="print the ids it would serve, one id per line, and exit",
    )
    serve.set_defaults(run=_serve)

    demo = commands.add_parser(
        "demo",
        help="bulk-fetch the bundled sample gallery on loopback and show the figures",
        description="Bulk-fetch the bundled sample gallery on 127.0.0.1 and show the figures.",
        epilog=_DEMO_EXAMPLES,
        formatter_class=formatter,
    )
    demo.set_defaults(run=_demo)
    _add_cache(commands)
    return parser

#!/usr/bin/env python3
"""Rebuild the validation and calibration text corpora (inputs/validation, inputs/calibration).

Both corpora are real English text that was not written for this project, taken from
Debian bookworm packages (unpacked with `apt-get download` + `dpkg-deb -x`, nothing is
installed) and from the running Python's standard library.  Every source file is assigned
to exactly one corpus by validation_sources()/calibration_sources() below, so no file
contributes to both; the build asserts this and also rejects any calibration passage that
near-duplicates a validation one (word 5-gram containment >= 0.3).

    python inputs/make_corpora.py --fetch     # download + unpack the Debian packages, then build
    python inputs/make_corpora.py             # build from an existing unpack (see --root)
    python inputs/make_corpora.py --check     # only re-verify the written corpora

The output is deterministic for a given set of package versions and Python version
(see inputs/validation/README.md for the versions used).
"""
from __future__ import annotations

import argparse
import ast
import bz2
import gzip
import html
import inspect
import lzma
import os
import random
import re
import struct
import subprocess
import sys
import sysconfig
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_ROOT = os.environ.get(
    "AEGIS_CORPUS_ROOT", os.path.join(os.path.expanduser("~"), ".cache", "aegis_hpc_corpora")
)
SEED = 20240611

# Debian bookworm packages (name, version used when the corpora were built).  --fetch asks
# for exactly these versions and falls back to the current candidate if the archive dropped one.
DEB_PACKAGES = {
    "base-files": "12.4+deb12u15",
    "doc-debian": "11.3+nmu1",
    "fortunes-min": "1:1.99.1-7.3",
    "fortunes": "1:1.99.1-7.3",
    "dict-devil": "1.0-13.1",
    "dict-jargon": "4.4.7-3.1",
    "debian-policy": "4.6.2.0",
    "manpages": "6.03-2",
    "manpages-dev": "6.03-2",
    "r-cran-janeaustenr": "1.0.0-1",
    "r-cran-tokenizers": "0.3.0-1",
    "r-cran-tm": "0.7-11-1",
}

# Length buckets in MiniLM tokens, [CLS] and [SEP] included, and how many passages to take.
BUCKETS = [  # name, lo, hi
    ("D2", 384, 512),
    ("D1", 257, 383),
    ("C", 129, 256),
    ("B", 33, 128),
    ("A", 8, 32),
]
QUOTA = {
    "validation": {"D2": 25, "D1": 35, "C": 60, "B": 80, "A": 75},
    "calibration": {"D2": 30, "D1": 40, "C": 70, "B": 95, "A": 90},
}

# Fortune files: the split is by file (all from Debian's non-offensive set).
FORTUNES_VAL = [("fortunes-min", f) for f in ("fortunes", "literature", "riddles")] + [
    ("fortunes", f) for f in ("computers", "law", "startrek", "art")
]
FORTUNES_CAL = [
    ("fortunes", f)
    for f in ("science", "people", "humorists", "work", "tao", "songs-poems", "wisdom", "education", "medicine")
]
LICENCES_VAL = ["GPL-3", "Apache-2.0", "Artistic", "BSD", "LGPL-3"]
LICENCES_CAL = ["GPL-2", "LGPL-2.1", "MPL-2.0", "GFDL-1.3", "CC0-1.0"]
DOC_DEBIAN_VAL = [
    "constitution.txt.gz",
    "social-contract.txt.gz",
    "debian-manifesto.gz",
    "bug-reporting.txt.gz",
    "bug-log-access.txt",
    "bug-maint-info.txt.gz",
    "source-unpack.txt",
]
POLICY_CAL = [
    "policy.txt.gz",
    "copyright-format-1.0.txt.gz",
    "debconf_specification.txt.gz",
    "menu-policy.txt.gz",
    "perl-policy.txt.gz",
    "autopkgtest.txt.gz",
    "README.txt.gz",
]
STDLIB_EXCLUDE = {"this.py", "antigravity.py", "pydoc.py", "__phello__", "pydoc_data", "idlelib",
                  "lib2to3", "test", "tkinter", "turtledemo", "ensurepip", "site-packages",
                  "config-3.11-x86_64-linux-gnu", "distutils", "venv", "__pycache__"}


@dataclass
class Doc:
    group: str      # round-robin group (one register/source family)
    file: str       # physical source file; must belong to one corpus only
    where: str      # human-readable source: package:path#section
    licence: str
    paras: list     # list of paragraph strings


# --------------------------------------------------------------------------------------------
# helpers

def _clean(s: str) -> str:
    s = s.replace("\r", "")
    s = re.sub(r"[\x00-\x08\x0b-\x1f\x7f]", " ", s)
    return re.sub(r"\s+", " ", s).strip()


def _read(path: str) -> str:
    raw = open(path, "rb").read()
    if path.endswith(".gz") or raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    return raw.decode("utf-8", "replace")


def _paras_blank(text: str) -> list:
    """Paragraphs separated by blank lines (lines kept, so callers can inspect indentation)."""
    return [p for p in re.split(r"\n[ \t]*\n", text.replace("\r\n", "\n")) if p.strip()]


def _root_path(root: str, pkg: str, rel: str) -> str | None:
    """rel inside the unpacked package pkg, falling back to the installed system file."""
    for cand in (os.path.join(root, "unpacked", pkg, rel.lstrip("/")), "/" + rel.lstrip("/")):
        if os.path.exists(cand):
            return cand
    return None


class Missing(Exception):
    pass


def _need(root, pkg, rel):
    p = _root_path(root, pkg, rel)
    if p is None:
        raise Missing(f"{pkg}:{rel} not found (run with --fetch, or apt-get install {pkg})")
    return p


# --------------------------------------------------------------------------------------------
# R lazy-load databases (janeaustenr, tokenizers): a tiny reader for character vectors

class _RUnser:
    def __init__(self, b):
        self.b, self.p, self.refs = b, 0, []

    def i(self):
        v = struct.unpack(">i", self.b[self.p:self.p + 4])[0]
        self.p += 4
        return v

    def obj(self):
        f = self.i()
        t, has_attr, has_tag = f & 0xFF, f & (1 << 9), f & (1 << 10)
        if t in (254, 242):
            return None
        if t == 255:
            return self.refs[(f >> 8) - 1]
        if t == 1:
            x = ("sym", self.obj())
            self.refs.append(x)
            return x
        if t == 9:
            n = self.i()
            if n == -1:
                return None
            x = self.b[self.p:self.p + n].decode("utf-8", "replace")
            self.p += n
            return x
        if t in (16, 19, 20):
            v = [self.obj() for _ in range(self.i())]
            return ("vec", t, v, self.obj() if has_attr else None)
        if t in (10, 13):
            n = self.i()
            v = struct.unpack(">%di" % n, self.b[self.p:self.p + 4 * n])
            self.p += 4 * n
            return ("int", v, self.obj() if has_attr else None)
        if t == 14:
            n = self.i()
            v = struct.unpack(">%dd" % n, self.b[self.p:self.p + 8 * n])
            self.p += 8 * n
            return ("real", v, self.obj() if has_attr else None)
        if t == 2:
            a = self.obj() if has_attr else None
            tag = self.obj() if has_tag else None
            return ("list", tag, self.obj(), self.obj(), a)
        raise ValueError(f"R type {t} not supported")


def _r_unserialize(b):
    r = _RUnser(b)
    assert b[:2] == b"X\n", "not an XDR R serialization"
    r.p = 2
    ver = r.i()
    r.i(), r.i()
    if ver == 3:
        n = r.i()  # length of the native-encoding name that follows
        r.p += n
    return r.obj()


def _r_decompress(raw):
    d = raw[4:]
    if d[:1] == b"Z":
        return bz2.decompress(d[1:])
    if d[:1] == b"X":
        return lzma.decompress(d[1:])
    if d[:1] == b"0":
        return d[1:]
    return zlib.decompress(d)


def r_lazyload(prefix: str) -> dict:
    """{name: list of str} for the character vectors of an R Rdata.rdb/.rdx pair."""
    idx = _r_unserialize(gzip.decompress(open(prefix + ".rdx", "rb").read()))
    variables = idx[2][0]
    a = variables[3]
    names = None
    while a:
        if a[1] == ("sym", "names"):
            names = a[2][2]
        a = a[3]
    rdb = open(prefix + ".rdb", "rb").read()
    out = {}
    for name, (_, (off, ln), _) in zip(names, variables[2]):
        o = _r_unserialize(_r_decompress(rdb[off:off + ln]))
        if o and o[0] == "vec" and o[1] == 16:
            out[name] = [x if x is not None else "" for x in o[2]]
    return out


# --------------------------------------------------------------------------------------------
# sources

AUSTEN_TITLES = {"prideprejudice": "Pride and Prejudice", "emma": "Emma", "persuasion": "Persuasion",
                 "sensesensibility": "Sense and Sensibility", "mansfieldpark": "Mansfield Park",
                 "northangerabbey": "Northanger Abbey"}


def _novel_docs(group, file, where, licence, title, lines):
    """Split a novel (list of lines) into chapters of paragraphs."""
    docs, cur, label = [], [], None
    chap = re.compile(r"^\s*(CHAPTER|Chapter)\s+[0-9IVXLC]+\b.*$|^\s*Epilogue\s*$")
    para = []

    def flush_para():
        if para:
            cur.append(" ".join(para))
            para.clear()

    for ln in lines:
        ln = ln.rstrip("\r")
        if chap.match(ln):
            flush_para()
            if label and cur:
                docs.append(Doc(group, file, f"{where}#{title}, {label}", licence, list(cur)))
            cur.clear()
            label = ln.strip().rstrip(".")
            continue
        if not ln.strip():
            flush_para()
        elif label:
            para.append(ln.strip())
    flush_para()
    if label and cur:
        docs.append(Doc(group, file, f"{where}#{title}, {label}", licence, list(cur)))
    for d in docs:
        d.paras = [re.sub(r"_([^_]+)_", r"\1", p) for p in d.paras]
        d.paras = [p for p in d.paras if not re.fullmatch(r"[A-Z0-9 .,:;'\-]+", p)]  # headings
    return docs


def src_austen(root):
    rel = "usr/lib/R/site-library/janeaustenr/data/Rdata"
    p = _need(root, "r-cran-janeaustenr", rel + ".rdb")[:-4]
    books = r_lazyload(p)
    docs = []
    for key in sorted(books):
        docs += _novel_docs("austen", rel + ".rdb", f"r-cran-janeaustenr:/{rel}.rdb", "public domain (text); MIT (R package)",
                            AUSTEN_TITLES.get(key, key), books[key])
    return docs


def src_melville(root):
    rel = "usr/lib/R/site-library/tokenizers/data/Rdata"
    p = _need(root, "r-cran-tokenizers", rel + ".rdb")[:-4]
    text = r_lazyload(p)["mobydick"][0].replace("\r\n", "\n")
    start = text.index("CHAPTER 1. Loomings.")
    end = text.index("End of Project Gutenberg")
    return _novel_docs("melville", rel + ".rdb", f"r-cran-tokenizers:/{rel}.rdb", "public domain (text); MIT (R package)",
                       "Moby Dick", text[start:end].split("\n"))


def src_reuters(root, topic):
    d = _need(root, "r-cran-tm", f"usr/lib/R/site-library/tm/texts/{topic}")
    docs = []
    for fn in sorted(os.listdir(d)):
        raw = open(os.path.join(d, fn), encoding="utf-8", errors="replace").read()
        title = re.search(r"<TITLE>(.*?)</TITLE>", raw, re.S)
        dateline = re.search(r"<DATELINE>(.*?)</DATELINE>", raw, re.S)
        body = re.search(r"<BODY>(.*?)</BODY>", raw, re.S)
        if not body:
            continue
        b = html.unescape(body.group(1))
        b = re.sub(r"\s*Reuter\s*$", "", b.strip())
        paras = [p for p in re.split(r"\n\s{2,}", b) if p.strip()]
        if dateline:
            paras[0] = html.unescape(dateline.group(1)).strip() + " " + paras[0]
        if title:
            paras.insert(0, html.unescape(title.group(1)))
        docs.append(Doc(f"reuters-{topic}", f"tm/texts/{topic}/{fn}",
                        f"r-cran-tm:/usr/lib/R/site-library/tm/texts/{topic}/{fn}",
                        "Reuters-21578 (free for research use); tm package GPL-3", paras))
    return docs


def _sphinx_paras(text):
    """Paragraphs of Sphinx plain-text output, without headings, grammar and code blocks."""
    out, prev = [], ""
    for p in _paras_blank(text):
        lines = p.split("\n")
        if len(lines) >= 2 and re.fullmatch(r"[*=\-~^#\"]{3,}", lines[-1].strip()):
            prev = ""
            continue  # heading
        first = lines[0]
        indented = len(first) - len(first.lstrip()) >= 3
        if ("::=" in p or ">>>" in p or (indented and prev.rstrip().endswith(":"))
                or re.match(r"\s*\* \d+(\.\d+)*\. ", p)):
            prev = p
            continue
        prev = p
        q = re.sub(r"\*\*(.+?)\*\*", r"\1", p, flags=re.S)
        q = re.sub(r"(?<![\w*])\*(\w[^*\n]*?)\*(?!\w)", r"\1", q)
        q = re.sub(r"\s+\[\d+\]", "", q)
        out.append(q)
    return out


def src_topics(root):
    from pydoc_data import topics as t
    path = os.path.abspath(t.__file__)
    docs = []
    for key in sorted(t.topics):
        docs.append(Doc("python-reference", path, f"python{sys.version.split()[0]}:Lib/pydoc_data/topics.py#{key}",
                        "PSF-2.0 (Python documentation)", _sphinx_paras(t.topics[key])))
    return docs


def src_stdlib(root):
    lib = sysconfig.get_paths()["stdlib"]
    files = []
    for dirpath, dirnames, filenames in os.walk(lib):
        dirnames[:] = sorted(d for d in dirnames if d not in STDLIB_EXCLUDE and not d.startswith("test"))
        for fn in sorted(filenames):
            if fn.endswith(".py") and fn not in STDLIB_EXCLUDE and not fn.startswith("test"):
                files.append(os.path.join(dirpath, fn))
    docs = []
    for path in sorted(files):
        rel = os.path.relpath(path, lib)
        try:
            tree = ast.parse(open(path, encoding="utf-8").read())
        except (SyntaxError, UnicodeDecodeError):
            continue
        nodes = [("module", tree)] + [
            (n.name, n) for n in ast.walk(tree)
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
        ]
        for name, n in nodes:
            ds = ast.get_docstring(n, clean=True)
            if not ds or len(ds) < 40:
                continue
            paras = []
            for p in _paras_blank(inspect.cleandoc(ds)):
                if ">>>" in p or p.startswith("    ") or "::=" in p:
                    continue
                paras.append(p)
            if paras:
                docs.append(Doc("python-docstrings", path, f"python{sys.version.split()[0]}:Lib/{rel}#{name} docstring",
                                "PSF-2.0", paras))
    return docs


def src_plain_licences(root, names):
    docs = []
    for n in names:
        p = _need(root, "base-files", f"usr/share/common-licenses/{n}")
        docs.append(Doc("licences", p, f"base-files:/usr/share/common-licenses/{n}",
                        f"{n} licence text (verbatim copying permitted)", _paras_blank(_read(p))))
    return docs


def src_python_licence(root):
    p = os.path.join(sysconfig.get_paths()["stdlib"], "LICENSE.txt")
    if not os.path.exists(p):
        raise Missing(p)
    return [Doc("licences", p, f"python{sys.version.split()[0]}:Lib/LICENSE.txt", "PSF-2.0 licence text",
                _paras_blank(_read(p)))]


def src_fortunes(root, files):
    docs = []
    for pkg, fn in files:
        rel = f"usr/share/games/fortunes/{fn}"
        p = _need(root, pkg, rel)
        text = _read(p)
        for i, f in enumerate(re.split(r"\n%\n", "\n" + text)):
            paras = _paras_blank(f)
            if paras:
                docs.append(Doc("fortunes", p, f"{pkg}:/{rel}#{i}", "BSD (fortune-mod); quotations of various authors", paras))
    return docs


_DICT_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def _dict_b64(s):
    v = 0
    for c in s:
        v = v * 64 + _DICT_B64.index(c)
    return v


def src_dictd(root, pkg, name, group, licence):
    d = _need(root, pkg, f"usr/share/dictd/{name}.dict.dz")
    ix = _need(root, pkg, f"usr/share/dictd/{name}.index")
    data = gzip.open(d).read()
    docs, seen = [], set()
    for line in open(ix, encoding="utf-8").read().splitlines():
        hw, off, ln = line.split("\t")[:3]
        if hw.startswith("00database") or (off, ln) in seen:
            continue
        seen.add((off, ln))
        entry = data[_dict_b64(off):_dict_b64(off) + _dict_b64(ln)].decode("utf-8", "replace")
        entry = re.sub(r"\{\s*([^{}]*?)\s*\}", r"\1", entry)
        paras = _paras_blank(entry)
        if name == "jargon" and len(paras) >= 2:
            paras = [paras[0].replace("\n", " ") + " " + paras[1]] + paras[2:] if len(paras[0]) < 80 else paras
        docs.append(Doc(group, d, f"{pkg}:/usr/share/dictd/{name}.dict.dz#{hw}", licence, paras))
    return docs


def src_doc_debian(root):
    docs = []
    for fn in DOC_DEBIAN_VAL:
        p = _need(root, "doc-debian", f"usr/share/doc/debian/{fn}")
        paras = [q for q in _paras_blank(_read(p)) if not re.fullmatch(r"\s*[-=_*]{4,}\s*", q)]
        lic = "OPL-1.0 (Open Publication License)" if fn.startswith(("constitution", "social", "debian-man")) else "GPL (Debian BTS documentation)"
        docs.append(Doc("debian-docs", p, f"doc-debian:/usr/share/doc/debian/{fn}", lic, paras))
    return docs


def src_policy(root):
    docs = []
    for fn in POLICY_CAL:
        p = _need(root, "debian-policy", f"usr/share/doc/debian-policy/{fn}")
        docs.append(Doc("debian-policy", p, f"debian-policy:/usr/share/doc/debian-policy/{fn}",
                        "GPL-2+ (Debian Policy)", _sphinx_paras(_read(p))))
    return docs


_MAN_SKIP_SECTIONS = {"EXAMPLES", "EXAMPLE", "SEE ALSO", "COLOPHON", "AUTHORS", "AUTHOR", "REPORTING BUGS", "NAME"}


def _render_man(path):
    src = _read(path)
    if re.match(r"\s*\.so\s", src) or len(src) < 200:
        return None, None
    m = re.search(r"SPDX-License-Identifier:\s*(\S+)", src)
    lic = m.group(1) if m else "see /usr/share/doc/manpages/copyright"
    r = subprocess.run(["groff", "-t", "-man", "-Tutf8", "-rLL=1500n", "-rHY=0", "-P-c", "-P-b", "-P-u", "-P-o"],
                       input=src.encode(), capture_output=True)
    out = r.stdout.decode("utf-8", "replace")
    return out, lic


def _man_paras(out):
    lines = out.split("\n")
    # drop header and footer lines (first and last non-empty lines)
    nonempty = [i for i, ln in enumerate(lines) if ln.strip()]
    if len(nonempty) < 3:
        return []
    lines = lines[nonempty[0] + 1:nonempty[-1]]
    paras, cur, section = [], [], ""
    for ln in lines + [""]:
        if ln and not ln[0].isspace():
            if cur:
                paras.append((section, " ".join(cur)))
                cur = []
            section = ln.strip()
            continue
        if not ln.strip():
            if cur:
                paras.append((section, " ".join(cur)))
                cur = []
            continue
        cur.append(ln.strip())
    return [p for s, p in paras if s not in _MAN_SKIP_SECTIONS]


def src_manpages(root, pkg, sections, group):
    base = _need(root, pkg, "usr/share/man")
    jobs = []
    for s in sections:
        d = os.path.join(base, f"man{s}")
        if not os.path.isdir(d):
            continue
        for fn in sorted(os.listdir(d)):
            p = os.path.join(d, fn)
            if os.path.islink(p) or not os.path.isfile(p):
                continue
            jobs.append((s, fn, p))
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as ex:
        rendered = list(ex.map(lambda j: _render_man(j[2]), jobs))
    docs = []
    for (s, fn, p), (out, lic) in zip(jobs, rendered):
        if not out:
            continue
        paras = _man_paras(out)
        if paras:
            docs.append(Doc(group, p, f"{pkg}:/usr/share/man/man{s}/{fn}", lic, paras))
    return docs


def validation_sources(root):
    return [
        ("austen", lambda: src_austen(root)),
        ("python-reference", lambda: src_topics(root)),
        ("licences", lambda: src_plain_licences(root, LICENCES_VAL)),
        ("fortunes", lambda: src_fortunes(root, FORTUNES_VAL)),
        ("devil", lambda: src_dictd(root, "dict-devil", "devil", "devil", "public domain (Ambrose Bierce, 1911)")),
        ("debian-docs", lambda: src_doc_debian(root)),
        ("manpages", lambda: src_manpages(root, "manpages", "145678", "manpages")),
        ("reuters-acq", lambda: src_reuters(root, "acq")),
    ]


def calibration_sources(root):
    return [
        ("melville", lambda: src_melville(root)),
        ("python-docstrings", lambda: src_stdlib(root)),
        ("licences", lambda: src_plain_licences(root, LICENCES_CAL) + src_python_licence(root)),
        ("fortunes", lambda: src_fortunes(root, FORTUNES_CAL)),
        ("jargon", lambda: src_dictd(root, "dict-jargon", "jargon", "jargon", "public domain (The Jargon File 4.4.7)")),
        ("debian-policy", lambda: src_policy(root)),
        ("manpages-dev", lambda: src_manpages(root, "manpages-dev", "23", "manpages-dev")),
        ("reuters-crude", lambda: src_reuters(root, "crude")),
    ]


# --------------------------------------------------------------------------------------------
# passages

_ABBREV = {"mr", "mrs", "ms", "dr", "st", "e.g", "i.e", "etc", "vs", "no", "fig", "sec", "cf", "vol", "ch",
           "jr", "sr", "inc", "corp", "co", "ltd", "u.s", "approx", "resp", "op", "al", "ca", "p", "pp"}
_BOUND = re.compile(r"[.!?][\"'”’)\]]*\s+(?=[\"'“‘(\[]?[A-Z0-9])")


def sentences(p: str) -> list:
    out, start = [], 0
    for m in _BOUND.finditer(p):
        word = re.findall(r"[\w.]+$", p[start:m.start() + 1])
        w = word[0].rstrip(".").lower() if word else ""
        if w in _ABBREV or (len(w) == 1 and w.isalpha()) or re.fullmatch(r"\d{1,3}|[ivx]{1,4}", w):
            continue  # abbreviation, initial or enumeration ("1.", "iv.")
        head = p[:m.end()]
        if head.count('"') % 2 or head.count("“") != head.count("”"):
            continue  # inside quoted speech
        out.append(p[start:m.end()].strip())
        start = m.end()
    if p[start:].strip():
        out.append(p[start:].strip())
    return out


def good_text(t: str) -> bool:
    words = re.findall(r"[A-Za-z]{2,}", t)
    if len(words) < 4:
        return False
    nonspace = re.sub(r"\s", "", t)
    letters = sum(c.isalpha() for c in nonspace)
    if letters < 0.62 * len(nonspace):
        return False
    if re.search(r"([^\w\s])\1{4,}", t):  # separators / ascii art
        return False
    return True


def heading_like(p: str) -> bool:
    if "://" in p:
        return False
    return len(p.split()) < 6 and not re.search(r"[.!?:;\"'”’)]$", p)


class Counter:
    def __init__(self):
        sys.path.insert(0, os.path.dirname(HERE))
        from aegis_hpc.nn import models

        self.models = models
        self.tok = models.tokenizer()
        self.tok.no_truncation()
        self.tok.no_padding()

    def count(self, texts):
        """Token counts WITHOUT [CLS]/[SEP] (additive over whitespace-joined pieces)."""
        if not texts:
            return []
        return [len(e.ids) - 2 for e in self.tok.encode_batch(list(texts))]


def prepare(docs, counter):
    """Turn each doc's paragraphs into lists of (sentence, ntok); drop junk."""
    allsent = []
    for d in docs:
        paras = []
        for p in d.paras:
            p = _clean(re.sub(r"\^\[\d+\]", "", p))  # lynx-style footnote marks
            if not p or heading_like(p):
                continue
            ss = [s for s in sentences(p)]
            if ss:
                paras.append(ss)
        d.sent = paras
        for ss in paras:
            allsent.extend(ss)
    counts = counter.count(allsent)
    k = 0
    for d in docs:
        withn = []
        for ss in d.sent:
            withn.append([(s, counts[k + i]) for i, s in enumerate(ss)])
            k += len(ss)
        d.sent = withn
    return docs


def windows(doc, lo, hi, rng):
    """Non-overlapping passages of lo..hi tokens (with specials) built from consecutive sentences."""
    flat = [(pi, si, s, n) for pi, ss in enumerate(doc.sent) for si, (s, n) in enumerate(ss)]
    para_len = {}
    for pi, ss in enumerate(doc.sent):
        para_len[pi] = len(ss)
    out, i = [], 0
    long_bucket = lo > 100
    while i < len(flat):
        if long_bucket and flat[i][1] != 0:  # long passages start at a paragraph start
            i += 1
            continue
        target = rng.randint(lo, hi) - 2
        n, j = 0, i
        while j < len(flat) and n + flat[j][3] <= hi - 2:
            n += flat[j][3]
            j += 1
            at_para_end = j == len(flat) or flat[j][1] == 0
            if n >= target and (at_para_end or lo <= 40):
                break
        if lo - 2 <= n <= hi - 2 and j > i:
            text = " ".join(f[2] for f in flat[i:j])
            if good_text(text):
                out.append(text)
            i = j
        else:
            i += 1
    return out


def shingles(t: str) -> set:
    w = re.findall(r"[a-z0-9]+", t.lower())
    if len(w) < 5:
        return {tuple(w)}
    return {tuple(w[k:k + 5]) for k in range(len(w) - 4)}


class DupIndex:
    def __init__(self):
        self.index, self.sizes = {}, []

    def near_dup(self, sh: set, thresh=0.3) -> bool:
        hits = {}
        for s in sh:
            for pid in self.index.get(s, ()):
                hits[pid] = hits.get(pid, 0) + 1
        for pid, h in hits.items():
            if h >= thresh * len(sh) or h >= thresh * self.sizes[pid]:
                return True
        return False

    def add(self, sh: set):
        pid = len(self.sizes)
        self.sizes.append(len(sh))
        for s in sh:
            self.index.setdefault(s, []).append(pid)


def build(name, sources, counter, dup: DupIndex, banned):
    rng = random.Random(f"{SEED}-{name}")
    groups = []
    for gname, fn in sources:
        docs = prepare(fn(), counter)
        rng_g = random.Random(f"{SEED}-{name}-{gname}")
        rng_g.shuffle(docs)
        groups.append((gname, docs))
        print(f"  [{name}] {gname}: {len(docs)} docs", file=sys.stderr)
    chosen = []
    for bname, lo, hi in BUCKETS:
        quota = QUOTA[name][bname]
        # candidate queues per group, interleaving documents
        queues = []
        for gname, docs in groups:
            per_doc = []
            for d in docs:
                w = windows(d, lo, hi, random.Random(f"{SEED}-{name}-{bname}-{d.where}"))
                rng.shuffle(w)
                if w:
                    per_doc.append([(t, d) for t in w])
            q = []
            depth = 0
            while any(depth < len(x) for x in per_doc):
                q += [x[depth] for x in per_doc if depth < len(x)]
                depth += 1
            queues.append((gname, q))
        taken, pos = 0, {g: 0 for g, _ in queues}
        while taken < quota:
            progress = False
            for gname, q in queues:
                if taken >= quota:
                    break
                while pos[gname] < len(q):
                    t, d = q[pos[gname]]
                    pos[gname] += 1
                    low = t.lower()
                    if any(b in low for b in banned):
                        continue
                    sh = shingles(t)
                    if dup.near_dup(sh):
                        continue
                    dup.add(sh)
                    chosen.append((bname, t, d))
                    taken += 1
                    progress = True
                    break
            if not progress:
                print(f"  [{name}] bucket {bname}: only {taken}/{quota}", file=sys.stderr)
                break
    # deterministic interleaved order: shuffle the whole corpus
    rng.shuffle(chosen)
    return chosen


def write(name, chosen, counter, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    texts = [t for _, t, _ in chosen]
    ntok = [len(x) for x in counter.models.tokenize(texts, 10**9)]
    with open(os.path.join(out_dir, "passages.txt"), "w", encoding="utf-8") as f:
        for t in texts:
            f.write(t + "\n")
    with open(os.path.join(out_dir, "SOURCES.tsv"), "w", encoding="utf-8") as f:
        f.write("line\ttokens\tsource\tlicence\n")
        for i, ((_, t, d), n) in enumerate(zip(chosen, ntok), 1):
            f.write(f"{i}\t{n}\t{d.where}\t{d.licence}\n")
    return {d.file for _, _, d in chosen}


# --------------------------------------------------------------------------------------------
# checks

def load_corpus(out_dir):
    texts = open(os.path.join(out_dir, "passages.txt"), encoding="utf-8").read().split("\n")
    assert texts[-1] == ""
    texts = texts[:-1]
    rows = open(os.path.join(out_dir, "SOURCES.tsv"), encoding="utf-8").read().splitlines()[1:]
    return texts, [r.split("\t") for r in rows]


def bucket_counts(ntok):
    c = {"8-32": 0, "33-128": 0, "129-256": 0, "257-512": 0, ">=384": 0, "other": 0}
    for n in ntok:
        if 8 <= n <= 32:
            c["8-32"] += 1
        elif 33 <= n <= 128:
            c["33-128"] += 1
        elif 129 <= n <= 256:
            c["129-256"] += 1
        elif 257 <= n <= 512:
            c["257-512"] += 1
        else:
            c["other"] += 1
        if 384 <= n <= 512:
            c[">=384"] += 1
    return c


def check(counter):
    mins = {"validation": (240, 60, 60, 40, 40, 15), "calibration": (300, 60, 60, 40, 40, 15)}
    sents = [s.strip() for s in open(os.path.join(HERE, "sentences.txt"), encoding="utf-8") if s.strip()]
    norm = lambda s: re.sub(r"\s+", " ", s.lower()).strip()  # noqa: E731
    corpora, ok = {}, True
    for name in ("validation", "calibration"):
        d = os.path.join(HERE, name)
        texts, rows = load_corpus(d)
        ntok = [len(x) for x in counter.models.tokenize(texts, 10**9)]
        c = bucket_counts(ntok)
        size = os.path.getsize(os.path.join(d, "passages.txt"))
        print(f"{name}: {len(texts)} passages, {size} bytes, buckets {c}")
        total, a, b, cc, dd, e = mins[name]
        errs = []
        if len(texts) < total or c["8-32"] < a or c["33-128"] < b or c["129-256"] < cc or c["257-512"] < dd or c[">=384"] < e:
            errs.append("bucket minimums not met")
        if c["other"]:
            errs.append(f"{c['other']} passages outside 8..512 tokens")
        if len(rows) != len(texts) or any(int(r[0]) != i + 1 or int(r[1]) != n for i, (r, n) in enumerate(zip(rows, ntok))):
            errs.append("SOURCES.tsv does not match passages.txt")
        if any("\n" in t or t != _clean(t) for t in texts):
            errs.append("passage not whitespace-normalised")
        if len(set(map(norm, texts))) != len(texts):
            errs.append("duplicate passages")
        hits = [s for s in sents for t in texts if norm(s) in norm(t)]
        if hits:
            errs.append(f"sentences.txt lines found: {hits}")
        within = DupIndex()
        ndup = 0
        for t in texts:
            sh = shingles(t)
            ndup += within.near_dup(sh)
            within.add(sh)
        if ndup:
            errs.append(f"{ndup} near-duplicate passages (5-gram containment >= 0.3)")
        if size > 600_000:
            errs.append("passages.txt larger than 600 KB")
        for e_ in errs:
            print(f"  FAIL {name}: {e_}")
        ok &= not errs
        corpora[name] = (texts, rows)
    (vt, vr), (ct, cr) = corpora["validation"], corpora["calibration"]
    vn, cn = [norm(t) for t in vt], [norm(t) for t in ct]
    cross = [(i, j) for i, a in enumerate(vn) for j, b in enumerate(cn) if a in b or b in a]
    if cross:
        ok = False
        print(f"  FAIL: {len(cross)} passages of one corpus occur inside the other: {cross[:5]}")
    vsrc = {r[2].split("#")[0] for r in vr}
    csrc = {r[2].split("#")[0] for r in cr}
    if vsrc & csrc:
        ok = False
        print(f"  FAIL: source files in both corpora: {sorted(vsrc & csrc)[:5]}")
    dup = DupIndex()
    for t in vt:
        dup.add(shingles(t))
    near = sum(dup.near_dup(shingles(t)) for t in ct)
    print(f"cross-corpus: exact/substring overlaps {len(cross)}, shared source files {len(vsrc & csrc)}, "
          f"calibration passages near-duplicating validation (5-gram containment >= 0.3): {near}")
    if near:
        ok = False
    print("OK" if ok else "CHECK FAILED")
    return ok


# --------------------------------------------------------------------------------------------

def fetch(root):
    debs = os.path.join(root, "debs")
    os.makedirs(debs, exist_ok=True)
    for pkg, ver in DEB_PACKAGES.items():
        have = [f for f in os.listdir(debs) if f.startswith(pkg + "_")]
        if not have:
            r = subprocess.run(["apt-get", "download", f"{pkg}={ver}"], cwd=debs)
            if r.returncode != 0:
                print(f"warning: {pkg}={ver} not available, taking the current candidate", file=sys.stderr)
                subprocess.run(["apt-get", "download", pkg], cwd=debs, check=True)
            have = [f for f in os.listdir(debs) if f.startswith(pkg + "_")]
        dest = os.path.join(root, "unpacked", pkg)
        if not os.path.isdir(dest):
            os.makedirs(dest)
            subprocess.run(["dpkg-deb", "-x", os.path.join(debs, sorted(have)[-1]), dest], check=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=DEFAULT_ROOT, help="where Debian packages are downloaded/unpacked")
    ap.add_argument("--fetch", action="store_true", help="apt-get download + dpkg-deb -x the packages first")
    ap.add_argument("--check", action="store_true", help="only verify the existing corpora")
    a = ap.parse_args()
    counter = Counter()
    if a.check:
        sys.exit(0 if check(counter) else 1)
    if a.fetch:
        fetch(a.root)
    banned = [re.sub(r"\s+", " ", s.lower()).strip()
              for s in open(os.path.join(HERE, "sentences.txt"), encoding="utf-8") if s.strip()]
    dup = DupIndex()
    val = build("validation", validation_sources(a.root), counter, dup, banned)
    vfiles = write("validation", val, counter, os.path.join(HERE, "validation"))
    cal = build("calibration", calibration_sources(a.root), counter, dup, banned)
    cfiles = write("calibration", cal, counter, os.path.join(HERE, "calibration"))
    assert not (vfiles & cfiles), f"source files used by both corpora: {sorted(vfiles & cfiles)}"
    sys.exit(0 if check(counter) else 1)


if __name__ == "__main__":
    main()

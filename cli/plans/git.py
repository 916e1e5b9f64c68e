"""Argv builders for git, which names the version a deploy builds. Pure: lists in, lists out."""

from __future__ import annotations


def head_commit(git: str, directory: str) -> list[str]:
    """`git rev-parse HEAD` in `directory`: the commit a default version is named after."""
    return [git, "-C", directory, "rev-parse", "--verify", "HEAD"]


def tracked_changes(git: str, directory: str) -> list[str]:
    """`git status --porcelain` of tracked files: empty output means the build matches the commit."""
    return [git, "-C", directory, "status", "--porcelain", "--untracked-files=no"]

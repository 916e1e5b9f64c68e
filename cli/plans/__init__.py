"""Pure argv builders for docker and ssh: they return lists and never run anything."""

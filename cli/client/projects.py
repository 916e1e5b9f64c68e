"""Projects and environments: `/v1/projects` and their `environments`."""

from __future__ import annotations

from cli.client.reader import Reader, env_path, project_path
from cli.client.transport import Transport
from cli.client.types import Environment, Project


class ProjectsApi(Transport):
    """Projects and the environment tree."""

    def list_projects(self) -> list[Project]:
        """The projects this token has a scope on."""
        data = Reader(self._request("GET", "/v1/projects"), "response")
        return [_project(item) for item in data.objects("projects")]

    def create_project(self, *, slug: str, description: str = "") -> Project:
        """Create a project."""
        body = {"slug": slug, "description": description}
        return _project(Reader(self._request("POST", "/v1/projects", body), "project"))

    def list_environments(self, *, project: str) -> list[Environment]:
        """The environments of a project."""
        data = Reader(self._request("GET", f"{project_path(project)}/environments"), "response")
        return [_environment(item) for item in data.objects("environments")]

    def create_environment(self, *, project: str, slug: str, parent: str | None = None) -> Environment:
        """Create an environment, optionally inheriting from a parent environment."""
        body = {"slug": slug, "parent": parent}
        path = f"{project_path(project)}/environments"
        return _environment(Reader(self._request("POST", path, body), "environment"))

    def set_environment_parent(self, *, project: str, environment: str, parent: str | None) -> Environment:
        """Change what an environment inherits from (`PATCH`; None: nothing)."""
        path = env_path(project, environment)
        return _environment(Reader(self._request("PATCH", path, {"parent": parent}), "environment"))

    def delete_environment(self, *, project: str, environment: str) -> None:
        """Delete an environment with no secrets and no children."""
        self._request("DELETE", env_path(project, environment))

    def delete_project(self, *, project: str) -> None:
        """Delete a project with no environments."""
        self._request("DELETE", project_path(project))


def _project(data: Reader) -> Project:
    return Project(
        slug=data.text("slug"), description=data.text("description"), created_at=data.text("created_at")
    )


def _environment(data: Reader) -> Environment:
    return Environment(
        slug=data.text("slug"), parent=data.maybe_text("parent"), created_at=data.text("created_at")
    )

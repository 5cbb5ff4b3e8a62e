"""FastAPI dependencies: the running server's parts and the caller's identity, as `Annotated`
types the routes declare (no module globals: everything hangs off `app.state`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from serving.auth import Principal, authenticate
from serving.chat import ChatService
from serving.context import ServerContext
from serving.control import ControlPlane
from serving.errors import APIError
from serving.settings import ServingSettings


def get_settings(request: Request) -> ServingSettings:
    return request.app.state.settings


def get_context(request: Request) -> ServerContext:
    ctx = getattr(request.app.state, "ctx", None)
    if ctx is None:
        raise APIError(503, "the server is starting; retry when /ready says so", code="not_ready")
    return ctx


def get_chat(request: Request, ctx: Annotated[ServerContext, Depends(get_context)]) -> ChatService:
    return request.app.state.chat


def get_control(
    request: Request, ctx: Annotated[ServerContext, Depends(get_context)]
) -> ControlPlane:
    return request.app.state.control


def chat_principal(
    request: Request, settings: Annotated[ServingSettings, Depends(get_settings)]
) -> Principal:
    return authenticate(settings.api_keys, request, "chat")


def admin_principal(
    request: Request, settings: Annotated[ServingSettings, Depends(get_settings)]
) -> Principal:
    return authenticate(settings.api_keys, request, "admin")


Context = Annotated[ServerContext, Depends(get_context)]
Chat = Annotated[ChatService, Depends(get_chat)]
Control = Annotated[ControlPlane, Depends(get_control)]
ChatUser = Annotated[Principal, Depends(chat_principal)]
Admin = Annotated[Principal, Depends(admin_principal)]

"""The hub's refusals in the line dialect's words: the text after ``! ``."""

from __future__ import annotations

from chatd.core import errors as err

#: CannotSend's ``why`` (the mode responsible) in words.
_CANNOT_SEND = {
    "n": "you are not in it (+n)",
    "m": "it is moderated (+m)",
    "b": "you are banned (+b)",
    "C": "CTCP requests are blocked (+C)",
}
#: CannotJoin's mode in words.
_CANNOT_JOIN = {
    "i": "it is invite-only (+i)",
    "k": "wrong or missing key (+k)",
    "l": "it is full (+l)",
    "b": "you are banned (+b)",
}


def error_text(exc: err.HubError) -> str:
    """What a line user reads for ``exc``."""
    match exc:
        case err.ErroneousNick(why=why):
            return why
        case err.NickInUse(nick=nick):
            return f"nickname is taken: {nick}"
        case err.NickReserved(nick=nick):
            return f"nickname is reserved: {nick}"
        case err.SameNick(nick=nick):
            return f"you are already {nick}"
        case err.NoSuchNick(nick=nick):
            return f"no such nick: {nick}"
        case err.BadRoomName(room=room, why=why):
            return f"invalid room name: {room} ({why})"
        case err.NoSuchRoom(room=room):
            return f"no such room: {room}"
        case err.NotInRoom(room=room):
            return f"you are not in {room}"
        case err.NoRoom():
            return "you are not in a room; /join ROOM"
        case err.AlreadyInRoom(room=room):
            return f"you are already in {room}"
        case err.UserNotInRoom(nick=nick, room=room):
            return f"{nick} is not in {room}"
        case err.UserInRoom(nick=nick, room=room):
            return f"{nick} is already in {room}"
        case err.NotRoomOperator(room=room):
            return f"you are not an operator of {room}"
        case err.CannotJoin(room=room):
            return f"cannot join {room}: {_CANNOT_JOIN.get(exc.mode, 'refused')}"
        case err.TooManyRooms(room=room, limit=limit, by_address=by_address):
            if by_address:
                return f"cannot join {room}: your address is in {limit} rooms already"
            return f"cannot join {room}: you are in {limit} rooms already"
        case err.CannotSend(room=room, why=why):
            return f"cannot send to {room}: {_CANNOT_SEND.get(why, why)}"
        case err.ForgedNotice():
            return "that action would read as a server notice"
        case err.InvalidText(what=what, why=why):
            return f"invalid {what}: {why}"
        case err.RecipientBusy(nick=nick):
            return f"{nick} is receiving too much; message not sent, try again later"
        case err.UnknownMode(char=char):
            return f"unknown mode: {char}"
        case err.InvalidModeParam(room=room, char=char, arg=arg, why=why):
            return f"{room}: invalid +{char} {arg or '(nothing)'}: {why}"
        case err.NeedMoreParams(what=what):
            return f"missing parameter: {what}"
        case err.NoPrivileges():
            return "permission denied: you are not a server operator"
        case err.BanListFull(room=room, char=char):
            return f"{room}: the +{char} list is full"
    return f"refused: {type(exc).__name__}"

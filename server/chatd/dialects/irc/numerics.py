"""IRC numeric replies: code, modern.ircdocs.horse parameter template and default text.

One table, data only. ``Numeric.ERR_NOSUCHNICK.code == "401"``; ``.template`` is the
reply as modern.ircdocs.horse writes it (``<client> <nickname> :No such nick/channel``),
documentation for whoever writes the reply; ``.text`` is the default last parameter, a
``str.format`` template where the text has fields (``ERR_NORECIPIENT.text.format(
command="PRIVMSG")``), and ``None`` where the last parameter is data (a topic, a
realname, a list of names) rather than prose. Texts are modern.ircdocs.horse's, typos of
the original numerics included (``Erroneus nickname``): clients match on codes, some
people on texts. The numerics modern.ircdocs.horse lists without a text take
theirs from RFC 2812 (303, 467, 477) and from hybrid/solanum (479); 410 and 730-734 come
from the IRCv3 capability-negotiation and monitor specs, 335 from ircdocs' bot mode.

IRCv3 standard replies (``FAIL``/``WARN``/``NOTE``) are commands, not numerics; the codes
chatd sends with them are in :data:`STANDARD_REPLY_CODES`.
"""

from __future__ import annotations

import enum


class Numeric(enum.Enum):
    """Every numeric the IRC dialect answers with."""

    def __init__(self, code: str, template: str, text: str | None) -> None:
        #: The 3-digit command, as sent.
        self.code = code
        #: The reply's parameters as modern.ircdocs.horse gives them.
        self.template = template
        #: Default last parameter (a ``str.format`` template), or None for data.
        self.text = text

    RPL_WELCOME = (
        "001",
        "<client> :Welcome to the <networkname> Network, <nick>[!<user>@<host>]",
        "Welcome to the {network} Network, {nick}",
    )
    RPL_YOURHOST = (
        "002",
        "<client> :Your host is <servername>, running version <version>",
        "Your host is {servername}, running version {version}",
    )
    RPL_CREATED = (
        "003",
        "<client> :This server was created <datetime>",
        "This server was created {datetime}",
    )
    RPL_MYINFO = (
        "004",
        "<client> <servername> <version> <available user modes> <available channel modes>"
        " [<channel modes with a parameter>]",
        None,
    )
    RPL_ISUPPORT = (
        "005",
        "<client> <1-13 tokens> :are supported by this server",
        "are supported by this server",
    )
    RPL_UMODEIS = ("221", "<client> <user modes>", None)
    RPL_LUSERCLIENT = (
        "251",
        "<client> :There are <u> users and <i> invisible on <s> servers",
        "There are {u} users and {i} invisible on {s} servers",
    )
    RPL_LUSEROP = ("252", "<client> <ops> :operator(s) online", "operator(s) online")
    RPL_LUSERUNKNOWN = (
        "253",
        "<client> <connections> :unknown connection(s)",
        "unknown connection(s)",
    )
    RPL_LUSERCHANNELS = ("254", "<client> <channels> :channels formed", "channels formed")
    RPL_LUSERME = (
        "255",
        "<client> :I have <c> clients and <s> servers",
        "I have {c} clients and {s} servers",
    )
    RPL_LOCALUSERS = (
        "265",
        "<client> [<u> <m>] :Current local users <u>, max <m>",
        "Current local users {u}, max {m}",
    )
    RPL_GLOBALUSERS = (
        "266",
        "<client> [<u> <m>] :Current global users <u>, max <m>",
        "Current global users {u}, max {m}",
    )
    RPL_AWAY = ("301", "<client> <nick> :<message>", None)
    RPL_USERHOST = ("302", "<client> :[<reply>{ <reply>}]", None)
    RPL_ISON = ("303", "<client> :[<nickname>{ <nickname>}]", None)
    RPL_UNAWAY = (
        "305",
        "<client> :You are no longer marked as being away",
        "You are no longer marked as being away",
    )
    RPL_NOWAWAY = (
        "306",
        "<client> :You have been marked as being away",
        "You have been marked as being away",
    )
    RPL_WHOISUSER = ("311", "<client> <nick> <username> <host> * :<realname>", None)
    RPL_WHOISSERVER = ("312", "<client> <nick> <server> :<server info>", None)
    RPL_WHOISOPERATOR = ("313", "<client> <nick> :is an IRC operator", "is an IRC operator")
    RPL_WHOWASUSER = ("314", "<client> <nick> <username> <host> * :<realname>", None)
    RPL_ENDOFWHO = ("315", "<client> <mask> :End of WHO list", "End of WHO list")
    RPL_WHOISIDLE = (
        "317",
        "<client> <nick> <secs> <signon> :seconds idle, signon time",
        "seconds idle, signon time",
    )
    RPL_ENDOFWHOIS = ("318", "<client> <nick> :End of /WHOIS list", "End of /WHOIS list")
    RPL_WHOISCHANNELS = ("319", "<client> <nick> :[prefix]<channel>{ [prefix]<channel>}", None)
    RPL_LISTSTART = ("321", "<client> Channel :Users  Name", "Users  Name")
    RPL_LIST = ("322", "<client> <channel> <client count> :<topic>", None)
    RPL_LISTEND = ("323", "<client> :End of /LIST", "End of /LIST")
    RPL_CHANNELMODEIS = ("324", "<client> <channel> <modestring> <mode arguments>...", None)
    RPL_CREATIONTIME = ("329", "<client> <channel> <creationtime>", None)
    RPL_WHOISBOT = ("335", "<client> <nick> :is a bot", "is a bot")
    RPL_WHOISACCOUNT = ("330", "<client> <nick> <account> :is logged in as", "is logged in as")
    RPL_NOTOPIC = ("331", "<client> <channel> :No topic is set", "No topic is set")
    RPL_TOPIC = ("332", "<client> <channel> :<topic>", None)
    RPL_TOPICWHOTIME = ("333", "<client> <channel> <nick> <setat>", None)
    RPL_INVITELIST = ("336", "<client> <channel>", None)
    RPL_ENDOFINVITELIST = ("337", "<client> :End of /INVITE list", "End of /INVITE list")
    RPL_INVITING = ("341", "<client> <nick> <channel>", None)
    RPL_INVEXLIST = ("346", "<client> <channel> <mask>", None)
    RPL_ENDOFINVEXLIST = (
        "347",
        "<client> <channel> :End of Channel Invite Exception List",
        "End of Channel Invite Exception List",
    )
    RPL_EXCEPTLIST = ("348", "<client> <channel> <mask>", None)
    RPL_ENDOFEXCEPTLIST = (
        "349",
        "<client> <channel> :End of channel exception list",
        "End of channel exception list",
    )
    RPL_VERSION = ("351", "<client> <version> <server> :<comments>", None)
    RPL_WHOREPLY = (
        "352",
        "<client> <channel> <username> <host> <server> <nick> <flags> :<hopcount> <realname>",
        None,
    )
    RPL_WHOSPCRPL = (
        "354",
        "<client> [token] [channel] [user] [ip] [host] [server] [nick] [flags] [hopcount]"
        " [idle] [account] [oplevel] [:realname]",
        None,
    )
    RPL_NAMREPLY = ("353", "<client> <symbol> <channel> :[prefix]<nick>{ [prefix]<nick>}", None)
    RPL_ENDOFNAMES = ("366", "<client> <channel> :End of /NAMES list", "End of /NAMES list")
    RPL_BANLIST = ("367", "<client> <channel> <mask> [<who> <set-ts>]", None)
    RPL_ENDOFBANLIST = (
        "368",
        "<client> <channel> :End of channel ban list",
        "End of channel ban list",
    )
    RPL_ENDOFWHOWAS = ("369", "<client> <nick> :End of WHOWAS", "End of WHOWAS")
    RPL_INFO = ("371", "<client> :<string>", None)
    RPL_MOTD = ("372", "<client> :<line of the motd>", None)
    RPL_ENDOFINFO = ("374", "<client> :End of INFO list", "End of INFO list")
    RPL_MOTDSTART = (
        "375",
        "<client> :- <server> Message of the day - ",
        "- {server} Message of the day - ",
    )
    RPL_ENDOFMOTD = ("376", "<client> :End of /MOTD command.", "End of /MOTD command.")
    RPL_YOUREOPER = ("381", "<client> :You are now an IRC operator", "You are now an IRC operator")
    RPL_TIME = ("391", "<client> <server> [<timestamp> [<TS offset>]] :<human-readable time>", None)
    ERR_UNKNOWNERROR = ("400", "<client> <command>{ <subcommand>} :<info>", None)
    ERR_NOSUCHNICK = ("401", "<client> <nickname> :No such nick/channel", "No such nick/channel")
    ERR_NOSUCHSERVER = ("402", "<client> <server name> :No such server", "No such server")
    ERR_NOSUCHCHANNEL = ("403", "<client> <channel> :No such channel", "No such channel")
    ERR_CANNOTSENDTOCHAN = (
        "404",
        "<client> <channel> :Cannot send to channel",
        "Cannot send to channel",
    )
    ERR_TOOMANYTARGETS = (
        "407",
        "<client> <target> :Too many targets",
        "Too many targets",
    )
    ERR_TOOMANYCHANNELS = (
        "405",
        "<client> <channel> :You have joined too many channels",
        "You have joined too many channels",
    )
    ERR_WASNOSUCHNICK = (
        "406",
        "<client> <nickname> :There was no such nickname",
        "There was no such nickname",
    )
    ERR_NOORIGIN = ("409", "<client> :No origin specified", "No origin specified")
    ERR_NORECIPIENT = (
        "411",
        "<client> :No recipient given (<command>)",
        "No recipient given ({command})",
    )
    ERR_INVALIDCAPCMD = ("410", "<client> <subcommand> :Invalid CAP command", "Invalid CAP command")
    ERR_NOTEXTTOSEND = ("412", "<client> :No text to send", "No text to send")
    ERR_INPUTTOOLONG = ("417", "<client> :Input line was too long", "Input line was too long")
    ERR_UNKNOWNCOMMAND = ("421", "<client> <command> :Unknown command", "Unknown command")
    ERR_NOMOTD = ("422", "<client> :MOTD File is missing", "MOTD File is missing")
    ERR_NONICKNAMEGIVEN = ("431", "<client> :No nickname given", "No nickname given")
    ERR_ERRONEUSNICKNAME = ("432", "<client> <nick> :Erroneus nickname", "Erroneus nickname")
    ERR_NICKNAMEINUSE = (
        "433",
        "<client> <nick> :Nickname is already in use",
        "Nickname is already in use",
    )
    ERR_NICKCOLLISION = (
        "436",
        "<client> <nick> :Nickname collision KILL from <user>@<host>",
        "Nickname collision KILL from {user}@{host}",
    )
    ERR_USERNOTINCHANNEL = (
        "441",
        "<client> <nick> <channel> :They aren't on that channel",
        "They aren't on that channel",
    )
    ERR_NOTONCHANNEL = (
        "442",
        "<client> <channel> :You're not on that channel",
        "You're not on that channel",
    )
    ERR_USERONCHANNEL = (
        "443",
        "<client> <nick> <channel> :is already on channel",
        "is already on channel",
    )
    ERR_NOTREGISTERED = ("451", "<client> :You have not registered", "You have not registered")
    ERR_NEEDMOREPARAMS = (
        "461",
        "<client> <command> :Not enough parameters",
        "Not enough parameters",
    )
    ERR_ALREADYREGISTERED = ("462", "<client> :You may not reregister", "You may not reregister")
    ERR_PASSWDMISMATCH = ("464", "<client> :Password incorrect", "Password incorrect")
    ERR_YOUREBANNEDCREEP = (
        "465",
        "<client> :You are banned from this server.",
        "You are banned from this server.",
    )
    ERR_KEYSET = ("467", "<client> <channel> :Channel key already set", "Channel key already set")
    ERR_CHANNELISFULL = (
        "471",
        "<client> <channel> :Cannot join channel (+l)",
        "Cannot join channel (+l)",
    )
    ERR_UNKNOWNMODE = (
        "472",
        "<client> <modechar> :is unknown mode char to me",
        "is unknown mode char to me",
    )
    ERR_INVITEONLYCHAN = (
        "473",
        "<client> <channel> :Cannot join channel (+i)",
        "Cannot join channel (+i)",
    )
    ERR_BANNEDFROMCHAN = (
        "474",
        "<client> <channel> :Cannot join channel (+b)",
        "Cannot join channel (+b)",
    )
    ERR_BADCHANNELKEY = (
        "475",
        "<client> <channel> :Cannot join channel (+k)",
        "Cannot join channel (+k)",
    )
    ERR_BADCHANMASK = ("476", "<client> <channel> :Bad Channel Mask", "Bad Channel Mask")
    ERR_NOCHANMODES = (
        "477",
        "<client> <channel> :Channel doesn't support modes",
        "Channel doesn't support modes",
    )
    ERR_BADCHANNAME = ("479", "<client> <channel> :Illegal channel name", "Illegal channel name")
    ERR_NOPRIVILEGES = (
        "481",
        "<client> :Permission Denied- You're not an IRC operator",
        "Permission Denied- You're not an IRC operator",
    )
    ERR_CHANOPRIVSNEEDED = (
        "482",
        "<client> <channel> :You're not channel operator",
        "You're not channel operator",
    )
    ERR_CANTKILLSERVER = ("483", "<client> :You cant kill a server!", "You cant kill a server!")
    ERR_NOOPERHOST = ("491", "<client> :No O-lines for your host", "No O-lines for your host")
    ERR_UMODEUNKNOWNFLAG = ("501", "<client> :Unknown MODE flag", "Unknown MODE flag")
    ERR_USERSDONTMATCH = (
        "502",
        "<client> :Cant change mode for other users",
        "Cant change mode for other users",
    )
    ERR_HELPNOTFOUND = (
        "524",
        "<client> <subject> :No help available on this topic",
        "No help available on this topic",
    )
    ERR_INVALIDKEY = (
        "525",
        "<client> <target chan> :Key is not well-formed",
        "Key is not well-formed",
    )
    RPL_WHOISSECURE = (
        "671",
        "<client> <nick> :is using a secure connection",
        "is using a secure connection",
    )
    ERR_INVALIDMODEPARAM = (
        "696",
        "<client> <target chan/user> <mode char> <parameter> :<description>",
        None,
    )
    RPL_HELPSTART = ("704", "<client> <subject> :<first line of help section>", None)
    RPL_HELPTXT = ("705", "<client> <subject> :<line of help text>", None)
    RPL_ENDOFHELP = ("706", "<client> <subject> :<last line of help text>", None)
    RPL_MONONLINE = ("730", "<client> :<target>[!<user>@<host>]{,<target>[!<user>@<host>]}", None)
    RPL_MONOFFLINE = ("731", "<client> :<target>{,<target>}", None)
    RPL_MONLIST = ("732", "<client> :<target>{,<target>}", None)
    RPL_ENDOFMONLIST = ("733", "<client> :End of MONITOR list", "End of MONITOR list")
    ERR_MONLISTFULL = (
        "734",
        "<client> <limit> <targets> :Monitor list is full.",
        "Monitor list is full.",
    )
    RPL_LOGGEDIN = (
        "900",
        "<client> <nick>!<user>@<host> <account> :You are now logged in as <username>",
        "You are now logged in as {username}",
    )
    RPL_LOGGEDOUT = (
        "901",
        "<client> <nick>!<user>@<host> :You are now logged out",
        "You are now logged out",
    )
    ERR_NICKLOCKED = (
        "902",
        "<client> :You must use a nick assigned to you",
        "You must use a nick assigned to you",
    )
    RPL_SASLSUCCESS = (
        "903",
        "<client> :SASL authentication successful",
        "SASL authentication successful",
    )
    ERR_SASLFAIL = ("904", "<client> :SASL authentication failed", "SASL authentication failed")
    ERR_SASLTOOLONG = ("905", "<client> :SASL message too long", "SASL message too long")
    ERR_SASLABORTED = (
        "906",
        "<client> :SASL authentication aborted",
        "SASL authentication aborted",
    )
    ERR_SASLALREADY = (
        "907",
        "<client> :You have already authenticated using SASL",
        "You have already authenticated using SASL",
    )
    RPL_SASLMECHS = (
        "908",
        "<client> <mechanisms> :are available SASL mechanisms",
        "are available SASL mechanisms",
    )


#: ``"401"`` → ``Numeric.ERR_NOSUCHNICK``.
BY_CODE: dict[str, Numeric] = {n.code: n for n in Numeric}

#: IRCv3 standard-reply codes chatd sends (``FAIL <command> <code> :<description>``) with
#: their default descriptions. INVALID_UTF8 is the utf8-only extension's code.
STANDARD_REPLY_CODES: dict[str, str] = {
    "INVALID_UTF8": "Message rejected because it contained invalid UTF-8",
}

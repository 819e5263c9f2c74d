"""The IRC dialect (RFC 1459/2812 as modern.ircdocs.horse describes them, plus IRCv3)."""

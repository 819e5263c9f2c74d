"""Client dialects: each turns one wire protocol into hub calls and hub events back into bytes."""

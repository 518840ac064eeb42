"""Studies built on the library, kept out of its core. Each may import every part; nothing imports them."""

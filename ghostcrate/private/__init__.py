"""The private registry: publish, yank, owners, search, users and tokens.

It owns the registry database and the durable store of private `.crate` files,
and answers for the names that are private; the appliance asks it first
("is this name yours?") and hands every other name to the mirror.
"""

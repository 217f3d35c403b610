"""The account's storage: Azurite and the counting proxy in front of it."""

"""What a node is: directory layout, the stock image, sandbox, containers, trusted CAs."""

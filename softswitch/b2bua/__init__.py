"""Back-to-back user agent: calls made of two independent dialogs joined by typed
call events, with anchored media."""

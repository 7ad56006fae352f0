/** A user's name: letters, digits and . _ @ + - (at most 64); compared without letter case. */
export const USERNAME_RE = /^[a-z0-9][a-z0-9._@+-]{0,63}$/i;

/** What an access token may be used for, in the order a granted scope is written. */
export const SCOPES = ['conversation:read', 'conversation:write', 'admin'] as const;

export type Scope = (typeof SCOPES)[number];

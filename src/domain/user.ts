export const LEVELS = ['beginner', 'intermediate', 'advanced'] as const;

export type Level = (typeof LEVELS)[number];

/** A user as the rules see them: never with a password hash (only credential lookups carry one, beside it). */
export interface User {
  id: number;
  username: string;
  email: string;
  age: number;
  level: Level;
  createdAt: Date;
}

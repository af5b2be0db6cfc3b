/** The path of protocol/asyncapi.json, and of the generated src/frames.ts. */
export const SPEC: string;
export const OUT: string;
/** The text of src/frames.ts as the spec makes it now. */
export function generate(): Promise<string>;

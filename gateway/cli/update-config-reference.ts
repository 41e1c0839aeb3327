// `npm run docs:config`: regenerates the README's configuration table from the settings schemas.
import { fileURLToPath } from "node:url";
import { updateReadmeConfigReference } from "./config-reference.js";

const readme = fileURLToPath(new URL("../../README.md", import.meta.url));
const changed = await updateReadmeConfigReference(readme);
process.stdout.write(
  changed ? "README.md configuration table updated\n" : "README.md configuration table is current\n",
);

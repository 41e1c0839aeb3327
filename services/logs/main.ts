import { runMain } from "../platform/service.js";
import { logsService } from "./service.js";

runMain(logsService);

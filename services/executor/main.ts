import { runMain } from "../platform/service.js";
import { executorService } from "./service.js";

runMain(executorService);

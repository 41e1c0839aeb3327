import { runMain } from "../platform/service.js";
import { notifierService } from "./service.js";

runMain(notifierService);

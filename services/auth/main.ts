import { runMain } from "../platform/service.js";
import { authService } from "./service.js";

runMain(authService);

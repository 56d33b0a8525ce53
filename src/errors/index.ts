/** The error union and its mapping. */
export * from "./ContainerdError.js"
